"""Load test of the service: HTTP recalls on a real uvicorn process against the same recalls
done in-process by memory_core, side by side in one run.

    .venv/bin/python scripts/bench_service.py [--kinds hopfield pc] [--n 10000] [--pc-n 100]
        [--concurrency 1 8 32 128] [--payloads json png] [--seconds 5] [--reps 2]
        [--config '{}'] [--no-fast-recall] [--out results/bench_service.json]

What it does:

1. Starts ``python -m uvicorn app.main:app`` on a free loopback port over a temporary data
   directory. Memories: "fashion", kind hopfield, shape [1, 28, 28], config ``--config``
   ({} = the service's defaults), N Fashion-MNIST training images, and its twin here, the
   same ``memory_core.UniversalHopfield`` (the resolved config the server reports); "pc",
   kind pc, the first ``--pc-n`` images, trained by the server's own job, and its twin here,
   the ``PCMemory`` loaded from the checkpoint the server wrote.
2. Cues: stored images with Gaussian noise (std 0.2), clipped and rounded to 8 bits, so that
   the JSON vector and the base64 PNG payloads carry exactly the same cue.
3. For each memory, concurrency c and payload (JSON vector, base64 PNG), interleaved: HTTP
   retrieve at concurrency c; in-process recall of the same cues in batches of c; (JSON
   only) the same HTTP load on a second server over the same data with micro-batching off
   (AMS_RECALL_BATCH_MAX=1); in-process recall one cue per call. Each measurement runs at
   least ``--seconds`` and at least max(2c, 32) recalls.

HTTP: c clients, each its own keep-alive connection (closed loop: the next request leaves
when the answer is in); the client is h11 over asyncio streams, because the load
generator shares the machine's cores with the server and must cost little. A recall is
``retrieve`` + ``energy`` + ``search(k=3)`` (for pc: the nearest stored pattern, euclidean):
what the service does per request, and what the in-process baseline does. Latency = request sent to answer read; in-process, every
cue of a batch has the batch's latency. The ratio compares HTTP throughput with the best
in-process throughput (batches of c or one at a time, whichever is faster). The HTTP
answers' top matches are checked against the in-process ones for the same cues.

Threads: by default torch runs one intra-op thread here and in the server (--torch-threads
1, AMS_TORCH_THREADS=1), the same on both sides. On a machine whose cores are busy with
other work, two intra-op threads wait for each other at every parallel region while one
of them is descheduled, and then single measurements swing by up to 10x.

Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h11
import numpy as np
import torch
from tqdm import tqdm

from memory_core import PCMemory, UniversalHopfield
from memory_core.data import fashion_mnist, flatten
from memory_core.images import tensor_to_png

K = 3  # matches asked for by every recall


# --- the server ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")}
    environ.update(AMS_DATA_DIR=str(data_dir), AMS_DEVICE="cpu", **env)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    log = open(data_dir.parent / f"server-{port}.log", "wb")  # noqa: SIM115 (lives with the process)
    proc = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            status, _ = asyncio.run(_once(port, "GET", "/readyz", b""))
            if status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server not ready after 300 s")


# --- a small HTTP/1.1 client (h11 over asyncio streams, keep-alive) ------------------------
class Connection:
    """One keep-alive connection; ``request`` sends one request and reads its whole answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.used = 0.0  # when the last answer came (monotonic seconds)

    @classmethod
    async def open(cls, port: int) -> Connection:
        conn = cls(port)
        await conn._connect()
        return conn

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = time.monotonic()

    async def request(self, method: str, target: str, body: bytes, ctype: str = "application/json") -> tuple[int, bytes]:
        # uvicorn closes a keep-alive connection idle for 5 s: open a new one first, as
        # HTTP clients do, rather than race the server's close.
        if time.monotonic() - self.used > 4.0:
            self.close()
            await self._connect()
        status, data = await self._exchange(method, target, body, ctype)
        self.used = time.monotonic()
        return status, data

    async def _exchange(self, method: str, target: str, body: bytes, ctype: str) -> tuple[int, bytes]:
        headers = [("Host", "127.0.0.1"), ("Content-Length", str(len(body)))]
        if body:
            headers.append(("Content-Type", ctype))
        out = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            out += self.h11.send(h11.Data(data=body))
        out += self.h11.send(h11.EndOfMessage())
        self.writer.write(out)
        await self.writer.drain()
        status, chunks = 0, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.h11.start_next_cycle()
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")

    def close(self) -> None:
        self.writer.close()


async def _once(port: int, method: str, target: str, body: bytes) -> tuple[int, bytes]:
    conn = await Connection.open(port)
    try:
        return await conn.request(method, target, body)
    finally:
        conn.close()


def call(port: int, method: str, target: str, payload: dict | None = None) -> dict | str:
    body = b"" if payload is None else json.dumps(payload).encode()
    status, data = asyncio.run(_once(port, method, target, body))
    if status >= 300:
        raise SystemExit(f"{method} {target}: {status} {data[:300]!r}")
    return json.loads(data) if data.startswith(b"{") else data.decode()


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``, or by this one."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def batch_stats(port: int) -> tuple[float, float]:
    """(batched calls, recalls in them) so far, from /metrics."""
    _, data = await _once(port, "GET", "/metrics", b"")
    text = data.decode()
    total = {"count": 0.0, "sum": 0.0}
    for m in re.finditer(r"^ams_recall_batch_size_(count|sum)\{[^}]*\} (\S+)$", text, re.MULTILINE):
        total[m.group(1)] += float(m.group(2))
    return total["count"], total["sum"]


# --- measurements ------------------------------------------------------------------------
def _summary(latencies: list[float], done: int, elapsed: float, cpu: float) -> dict:
    lat = np.asarray(latencies) * 1000.0  # ms
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    return {"requests": done, "seconds": elapsed, "throughput": done / elapsed, "cpu_seconds": cpu,
            "per_cpu_second": done / cpu, "p50_ms": p50, "p99_ms": p99, "p99_over_p50": p99 / p50}


async def _http_cell(port: int, pid: int, log: Path, target: str, bodies: list[bytes], c: int, min_requests: int,
                     seconds: float) -> tuple[dict, dict[int, bytes]]:
    conns = [await Connection.open(port) for _ in range(c)]
    # Warm: one untimed request per connection, all at once.
    await asyncio.gather(*(conn.request("POST", target, body) for conn, body in zip(conns, itertools.cycle(bodies))))
    before = await batch_stats(port)
    latencies: list[float] = []
    answers: dict[int, bytes] = {}  # cue index -> first answer (for checking)
    counter = itertools.count()
    errors: list[str] = []
    cpu = cpu_seconds(pid)
    start = time.perf_counter()
    deadline = start + seconds

    async def client(conn: Connection) -> None:
        while time.perf_counter() < deadline or len(latencies) < min_requests:
            i = next(counter) % len(bodies)
            t = time.perf_counter()
            status, data = await conn.request("POST", target, bodies[i])
            latencies.append(time.perf_counter() - t)
            if status != 200:
                errors.append(f"{status} {data[:200]!r}")
                return
            answers.setdefault(i, data)

    try:
        await asyncio.gather(*(client(conn) for conn in conns))
    except (ConnectionError, h11.ProtocolError) as exc:
        raise SystemExit(f"connection lost: {exc!r}; server log ends:\n{log.read_text()[-3000:]}") from None
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu
    after = await batch_stats(port)
    for conn in conns:
        conn.close()
    if errors:
        raise SystemExit(f"HTTP errors: {errors[:3]}")
    result = _summary(latencies, len(latencies), elapsed, cpu)
    calls, recalls = after[0] - before[0], after[1] - before[1]  # batched calls (server side)
    result["mean_batch"] = recalls / calls if calls else None
    return result, answers


def http_cell(server: tuple[subprocess.Popen, int], target: str, bodies: list[bytes], c: int,
              min_requests: int, seconds: float):
    proc, port = server
    return asyncio.run(_http_cell(port, proc.pid, proc.log_path, target, bodies, c, min_requests, seconds))


@dataclass
class Twin:
    """The in-process side of one memory: its recall model and the index that names results.

    For a hopfield memory both are the same ``UniversalHopfield``; for a PC memory the model
    is the ``PCMemory`` the server trained (loaded from its checkpoint) and the index a
    euclidean nearest-pattern search over the stored patterns, as in ``app/trained.py``.
    """

    name: str  # the memory's name in the service
    model: object  # retrieve(cues) -> (B, D); energy(states) -> (B,)
    index: UniversalHopfield
    cues: torch.Tensor  # (M, D) noisy cues
    bodies: dict[str, list[bytes]]  # payload -> one request body per cue
    ids: list[str]  # row -> pattern id


def recall_in_process(twin: Twin, cues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the service does per recall: retrieve, energy, search(k). Returns (out, top rows)."""
    out = twin.model.retrieve(cues)  # (B, D)
    twin.model.energy(out)  # (B,)
    _, rows = twin.index.search(out, k=K)  # (B, K)
    return out, rows


def inprocess_cell(twin: Twin, batch: int, min_requests: int, seconds: float) -> dict:
    latencies: list[float] = []
    done, i = 0, 0
    cpu = cpu_seconds(None)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or done < min_requests:
        idx = torch.arange(i, i + batch) % twin.cues.shape[0]
        t = time.perf_counter()
        recall_in_process(twin, twin.cues[idx])
        latencies += [time.perf_counter() - t] * batch
        done, i = done + batch, i + batch
    return _summary(latencies, done, time.perf_counter() - start, cpu_seconds(None) - cpu)


def check_answers(answers: dict[int, bytes], want_top: list[int], ids: list[str]) -> float:
    """Fraction of HTTP answers whose best match is the in-process best match for that cue."""
    same = [json.loads(a)["matches"][0]["id"] == ids[want_top[i]] for i, a in answers.items()]
    return float(np.mean(same))


# --- main ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["hopfield", "pc"], choices=["hopfield", "pc"])
    parser.add_argument("--n", type=int, default=10_000, help="Fashion-MNIST images stored in the hopfield memory")
    parser.add_argument("--pc-n", type=int, default=100, help="Fashion-MNIST images stored in the PC memory")
    parser.add_argument("--pc-epochs", type=int, default=150, help="training epochs of the PC memory")
    parser.add_argument("--cues", type=int, default=256, help="distinct noisy cues, cycled")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--payloads", nargs="+", default=["json", "png"], choices=["json", "png"])
    parser.add_argument("--seconds", type=float, default=5.0, help="least time per measurement")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repeats of each cell (medians kept)")
    parser.add_argument("--config", default="{}", help="the memory's config, JSON ({} = service defaults)")
    parser.add_argument("--batch-max", type=int, default=None, help="AMS_RECALL_BATCH_MAX (default: the service's)")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="AMS_RECALL_BATCH_WAIT_MS")
    parser.add_argument("--no-fast-recall", action="store_true",
                        help="AMS_FAST_RECALL=false: recalls through FastAPI's routing (app/fastpath.py off)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads, here and in the server (AMS_TORCH_THREADS); 0 = torch's default")
    parser.add_argument("--out", type=Path, default=Path("results/bench_service.json"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench stops its servers too
    torch.manual_seed(0)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    env = {"AMS_TORCH_THREADS": str(args.torch_threads)}
    if args.batch_max is not None:
        env["AMS_RECALL_BATCH_MAX"] = str(args.batch_max)
    if args.batch_wait_ms is not None:
        env["AMS_RECALL_BATCH_WAIT_MS"] = str(args.batch_wait_ms)
    if args.no_fast_recall:
        env["AMS_FAST_RECALL"] = "false"
    gen = torch.Generator().manual_seed(0)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        data = Path(tmp) / "data"
        proc, port = start_server(data, env)
        try:
            info = call(port, "GET", "/v1/info")
            twins, configs = [], {}
            if "hopfield" in args.kinds:
                twin, configs["fashion"] = setup_hopfield(port, args.n, json.loads(args.config), args.cues, gen)
                twins.append(twin)
            if "pc" in args.kinds:
                twin, configs["pc"] = setup_pc(port, data, args.pc_n, args.pc_epochs, args.cues, gen)
                twins.append(twin)
            # A second server on the same data, micro-batching off: what batching buys.
            plain = start_server(data, {**env, "AMS_RECALL_BATCH_MAX": "1"})
            try:
                for twin in twins:
                    results[twin.name] = run_cells(args, (proc, port), plain, twin)
            finally:
                plain[0].send_signal(signal.SIGTERM)
                plain[0].wait(60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    for twin in twins:
        print(f"\n{twin.name}: {len(twin.ids)} Fashion-MNIST images, {configs[twin.name]}, torch threads "
              f"{torch.get_num_threads()}, server batching: max {env.get('AMS_RECALL_BATCH_MAX', 'default')}, "
              f"wait {env.get('AMS_RECALL_BATCH_WAIT_MS', 'default')} ms, fast recall path "
              f"{env.get('AMS_FAST_RECALL', 'on')}")
        print_table(results[twin.name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "memories": {t.name: {"n": len(t.ids), "config": configs[t.name], "rows": results[t.name]} for t in twins},
        "env": env, "device": info["device"], "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }, indent=2))
    print(f"wrote {args.out}")


def _noisy_cues(images: torch.Tensor, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Noisy copies of stored images (std 0.2, clipped, 8 bits): (picks, cues (M, D), bodies)."""
    picks = torch.randint(0, images.shape[0], (count,), generator=gen)
    noisy = (images[picks] + 0.2 * torch.randn(images[picks].shape, generator=gen)).clamp(0, 1)
    noisy = (noisy * 255).round() / 255  # 8 bits: the PNG carries exactly this cue
    cues = flatten(noisy)  # (M, 784)
    bodies = {
        "json": [json.dumps({"vector": v.tolist(), "k": K}).encode() for v in cues],
        "png": [json.dumps({"image": base64.b64encode(tensor_to_png(x)).decode(), "k": K}).encode() for x in noisy],
    }
    return picks, cues, bodies


def _store(port: int, name: str, patterns: torch.Tensor) -> list[str]:
    ids = [f"f{i}" for i in range(patterns.shape[0])]
    for at in tqdm(range(0, len(ids), 1000), desc=f"store {name} over HTTP"):
        chunk = [{"id": ids[i], "vector": patterns[i].tolist()} for i in range(at, min(at + 1000, len(ids)))]
        call(port, "POST", f"/v1/memories/{name}/patterns", {"patterns": chunk})
    return ids


def setup_hopfield(port: int, n: int, config: dict, count: int, gen: torch.Generator) -> tuple[Twin, dict]:
    """A hopfield memory of n images on the server, and its twin here."""
    images = fashion_mnist("train", limit=n)[0]  # (N, 1, 28, 28)
    patterns = flatten(images)  # (N, 784)
    details = call(port, "POST", "/v1/memories",
                   {"name": "fashion", "kind": "hopfield", "shape": [1, 28, 28], "config": config})
    ids = _store(port, "fashion", patterns)
    m = UniversalHopfield(**details["config"], device="cpu")
    m.store(patterns)
    _, cues, bodies = _noisy_cues(images, count, gen)
    return Twin("fashion", m, m, cues, bodies, ids), details["config"]


def setup_pc(port: int, data: Path, n: int, epochs: int, count: int, gen: torch.Generator) -> tuple[Twin, dict]:
    """A PC memory of n images on the server, trained there (a job); its twin here loads the
    checkpoint the server wrote, so both sides recall with the same weights."""
    images = fashion_mnist("train", limit=n)[0]
    patterns = flatten(images)
    details = call(port, "POST", "/v1/memories",
                   {"name": "pc", "kind": "pc", "shape": [1, 28, 28], "config": {"epochs": epochs}})
    ids = _store(port, "pc", patterns)
    job = call(port, "POST", "/v1/memories/pc/train", {})
    with tqdm(total=epochs, desc="train pc (server job)") as bar:
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(1.0)
            job = call(port, "GET", f"/v1/jobs/{job['id']}")
            bar.update(job["epoch"] - bar.n)
    if job["status"] != "succeeded":
        raise SystemExit(f"training failed: {job}")
    (checkpoint,) = data.glob("checkpoints/*/pc-*.safetensors")
    model = PCMemory.load(checkpoint, device="cpu")
    index = UniversalHopfield("euclidean", "max", device="cpu")
    index.store(patterns)
    _, cues, bodies = _noisy_cues(images, count, gen)
    return Twin("pc", model, index, cues, bodies, ids), details["config"]


def print_table(rows: list[dict]) -> None:
    head = ("| c | payload | HTTP req/s | p50 ms | p99 ms | p99/p50 | mean batch | HTTP unbatched req/s | "
            "in-process req/s: batch of c / one by one | HTTP / best in-process | same, per CPU second | same top |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        h, b, s, u = r["http"], r["inprocess_batch"], r["inprocess_single"], r["http_unbatched"]
        mb = "-" if h["mean_batch"] is None else f"{h['mean_batch']:.1f}"
        ut = "-" if u is None else f"{u['throughput']:.1f}"
        print(f"| {r['concurrency']} | {r['payload']} | {h['throughput']:.1f} | {h['p50_ms']:.0f} | "
              f"{h['p99_ms']:.0f} | {h['p99_over_p50']:.2f} | {mb} | {ut} | {b['throughput']:.1f} / "
              f"{s['throughput']:.1f} | {r['ratio']:.2f} | {r['ratio_cpu']:.2f} | {r['same_top']:.3f} |")


def _median(runs: list[dict]) -> dict:
    """Per key, the median over repeated measurements (each key on its own)."""
    return {k: float(np.median([r[k] for r in runs])) if runs[0][k] is not None else None for k in runs[0]}


def run_cells(args, server, plain, twin: Twin) -> list[dict]:
    """Every (concurrency, payload) cell of one memory: HTTP and in-process measurements
    interleaved, ``--reps`` times each; the medians are kept."""
    want_top = recall_in_process(twin, twin.cues)[1][:, 0].tolist()
    rows = []
    cells = [(c, p) for c in args.concurrency for p in args.payloads]
    target = f"/v1/memories/{twin.name}/retrieve"
    for c, payload in tqdm(cells, desc=f"{twin.name} cells"):
        need = max(2 * c, 32)
        bodies = twin.bodies[payload]
        runs: dict[str, list[dict]] = {"http": [], "http_unbatched": [], "inprocess_batch": [], "inprocess_single": []}
        same = []
        for _ in range(args.reps):
            http, answers = http_cell(server, target, bodies, c, need, args.seconds)
            runs["http"].append(http)
            same.append(check_answers(answers, want_top, twin.ids))
            runs["inprocess_batch"].append(inprocess_cell(twin, c, need, args.seconds))
            if payload == "json":  # the same requests to the server that does not batch
                runs["http_unbatched"].append(http_cell(plain, target, bodies, c, need, args.seconds)[0])
            runs["inprocess_single"].append(inprocess_cell(twin, 1, 8, args.seconds))
        row = {"concurrency": c, "payload": payload, "reps": runs, "same_top": min(same)}
        row.update({k: _median(v) if v else None for k, v in runs.items()})
        for key, unit in (("ratio", "throughput"), ("ratio_cpu", "per_cpu_second")):
            best = max(row["inprocess_batch"][unit], row["inprocess_single"][unit])
            row[key] = row["http"][unit] / best
        rows.append(row)
        h = row["http"]
        tqdm.write(f"{twin.name} c={c} {payload}: HTTP {h['throughput']:.1f}/s ({h['per_cpu_second']:.1f}/CPU s, "
                   f"p50 {h['p50_ms']:.0f} ms, p99 {h['p99_ms']:.0f} ms, mean batch {h['mean_batch']}); in-process "
                   f"B=c {row['inprocess_batch']['throughput']:.1f}/s, B=1 {row['inprocess_single']['throughput']:.1f}/s;"
                   f" HTTP/best {row['ratio']:.2f} (per CPU s {row['ratio_cpu']:.2f})")
    return rows


if __name__ == "__main__":
    main()
