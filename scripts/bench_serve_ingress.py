"""The Ray mode's two ways to serve HTTP, side by side in one run on one local Ray cluster: the
gateway in its own process (``python -m app`` holding handles to the shard actors, what the
service does) against the same FastAPI app as a Ray Serve ingress deployment (1 replica,
Serve's HTTP proxy in front). Recall latency (median, p95) and throughput over real HTTP.

    .venv/bin/python scripts/bench_serve_ingress.py [--n 20000] [--shards 2] [--rounds 4]
        [--per-round 40] [--clients 8] [--seconds 4] [--out results/bench_serve_ingress.json] [--keep]

What it does:

1. Starts a local Ray cluster (app/cluster/local.py: a head and two worker nodes on this
   machine) and two gateways of the same app on it, each with its own data directory:
   ``in-process``: ``python -m app`` in a child process (uvicorn, AMS_PORT a free port);
   ``serve``: ``serve.ingress(builder)`` deployment, ``num_replicas=1``, no CPUs reserved
   (like the in-process gateway, it computes no recall), the app built on the replica from
   the same settings (its lifespan starts the service there: catalog, prober, shard
   handles), Serve's proxy on the head node only, on a free port, access log off (the
   in-process gateway writes none either).
2. Each gateway gets a hopfield memory of ``--shards`` shards (default config: euclidean,
   softmax, beta 100) holding the first N Fashion-MNIST training images (shape [1, 28, 28]).
3. Latency: ``POST .../retrieve`` of one noisy stored image (std 0.3, k = 3), one request
   at a time over a keep-alive connection; the two gateways take turns request by request,
   so the machine's load hits both alike; every answer pair is compared (same match ids,
   scores to 1e-5).
4. Throughput: ``--clients`` threads, each with its own connection, send recalls for
   ``--seconds`` s; gateways alternate, ``--rounds`` rounds each; median recalls per second.

Threads: one torch thread in this process, the gateways and each shard. Prints a table,
writes JSON (--out). Its temp folder (cluster, data, logs) is removed at the end;
--keep, or a failed run, keeps it for inspection (the path is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster_helpers import SharedCluster, work_folder  # noqa: E402

from app.cluster.local import NODE_IP, _free_port  # noqa: E402
from memory_core.data import fashion_mnist, flatten  # noqa: E402

NAMESPACE = "ams-bench-serve"


def gateway_settings(data_dir: Path, cluster: Any) -> dict[str, Any]:
    """The settings both gateways share (AMS_* names without the prefix)."""
    return {
        "data_dir": str(data_dir),
        "device": "cpu",
        "ray_address": cluster.env["AMS_RAY_ADDRESS"],
        "ray_node_ip": NODE_IP,
        "ray_namespace": NAMESPACE,
        "shard_cpus": 0.5,
        "shard_threads": 1,
        "log_level": "warning",
    }


def start_in_process(data_dir: Path, cluster: Any, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        **cluster.env,
        "OMP_NUM_THREADS": "1",
        "AMS_HOST": "127.0.0.1",
        "AMS_PORT": str(port),
    }
    env |= {f"AMS_{k.upper()}": str(v) for k, v in gateway_settings(data_dir, cluster).items()}
    return subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT
    )


def build_app(settings: dict[str, Any]) -> Any:
    """Runs on the Serve replica: the service's FastAPI app from these settings."""
    torch.set_num_threads(1)
    from app.main import create_app
    from app.settings import Settings

    return create_app(Settings(**settings))


def start_serve(data_dir: Path, cluster: Any, port: int) -> None:
    import ray
    from ray import serve

    ray.init(address=cluster.address, _node_ip_address=NODE_IP, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    settings = gateway_settings(data_dir, cluster)
    ingress = serve.deployment(
        serve.ingress(lambda: build_app(settings))(),
        name="ams",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=64,
    )
    quiet = {"enable_access_log": False, "log_level": "WARNING"}  # as the in-process gateway: no access log
    serve.run(ingress.bind(), name="ams", route_prefix="/", blocking=False, logging_config=quiet)


def wait_ready(url: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready within {timeout:g} s")


def fill(client: httpx.Client, shards: int, vectors: torch.Tensor) -> None:
    body = {"name": "m", "kind": "hopfield", "shape": [1, 28, 28], "config": {"shards": shards}}
    r = client.post("/v1/memories", json=body)
    assert r.status_code == 201, r.text
    for at in range(0, len(vectors), 1000):
        part = vectors[at : at + 1000]
        body = {"patterns": [{"id": f"p{at + i}", "vector": v.tolist()} for i, v in enumerate(part)]}
        r = client.post("/v1/memories/m/patterns", json=body, timeout=120)
        assert r.status_code == 201, r.text


def throughput(url: str, bodies: list[dict], clients: int, seconds: float) -> float:
    """Recalls per second answered 200 by ``clients`` threads sending for ``seconds``."""
    done, stop = [0] * clients, threading.Event()

    def run(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            at = index
            while not stop.is_set():
                r = client.post("/v1/memories/m/retrieve", json=bodies[at % len(bodies)])
                assert r.status_code == 200, r.text
                done[index] += 1
                at += clients

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def same_answer(a: dict, b: dict) -> float:
    """Largest score difference; asserts the same match ids."""
    assert [m["id"] for m in a["matches"]] == [m["id"] for m in b["matches"]], (a, b)
    return max(abs(x["score"] - y["score"]) for x, y in zip(a["matches"], b["matches"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_serve_ingress.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (cluster, logs) at the end")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vectors = flatten(fashion_mnist("train", limit=args.n)[0])  # (N, 784)
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(0, args.n, (400,), generator=gen)
    cues = (vectors[picks] + 0.3 * torch.randn(400, 784, generator=gen)).clamp(0, 1)
    bodies = [{"vector": c.tolist(), "k": 3} for c in cues]
    with work_folder("bench-serve-", args.keep) as tmp:
        shared = SharedCluster(tmp / "ray")
        child = None
        try:
            cluster = shared.get()
            ports = {"in-process": _free_port(), "serve": _free_port()}
            urls = {label: f"http://127.0.0.1:{port}" for label, port in ports.items()}
            child = start_in_process(tmp / "in-process", cluster, ports["in-process"], tmp / "in-process.log")
            start_serve(tmp / "serve", cluster, ports["serve"])
            clients = {}
            for label, url in urls.items():
                wait_ready(url)
                clients[label] = httpx.Client(base_url=url, timeout=120)
                fill(clients[label], args.shards, vectors)
                print(f"{label}: ready, {args.n} patterns in {args.shards} shards", flush=True)
            latency: dict[str, list[float]] = {label: [] for label in urls}
            worst, at = 0.0, 0
            for rnd in range(args.rounds):
                for _ in range(args.per_round):
                    answers = {}
                    for label, client in clients.items():
                        start = time.perf_counter()
                        r = client.post("/v1/memories/m/retrieve", json=bodies[at % len(bodies)])
                        latency[label].append(time.perf_counter() - start)
                        assert r.status_code == 200, r.text
                        answers[label] = r.json()
                    worst = max(worst, same_answer(answers["in-process"], answers["serve"]))
                    at += 1
                print(f"latency round {rnd + 1}/{args.rounds} done", flush=True)
            rates: dict[str, list[float]] = {label: [] for label in urls}
            for rnd in range(args.rounds):
                for label, url in urls.items():
                    rates[label].append(throughput(url, bodies, args.clients, args.seconds))
                print(f"throughput round {rnd + 1}/{args.rounds} done", flush=True)
            table = {
                label: {
                    "latency_ms_median": 1e3 * statistics.median(latency[label]),
                    "latency_ms_p95": 1e3 * float(np.percentile(latency[label], 95)),
                    "recalls_per_s_median": statistics.median(rates[label]),
                    "recalls_per_s_rounds": rates[label],
                }
                for label in urls
            }
            base, serve_row = table["in-process"], table["serve"]
            ratios = {
                "latency_median_serve_over_in_process": serve_row["latency_ms_median"]
                / base["latency_ms_median"],
                "latency_p95_serve_over_in_process": serve_row["latency_ms_p95"] / base["latency_ms_p95"],
                "throughput_serve_over_in_process": serve_row["recalls_per_s_median"]
                / base["recalls_per_s_median"],
            }
            for label, row in table.items():
                print(
                    f"{label:10s} latency median {row['latency_ms_median']:7.2f} ms  p95 {row['latency_ms_p95']:7.2f} ms"
                    f"  {args.clients} clients: {row['recalls_per_s_median']:6.1f} recalls/s"
                )
            print("serve / in-process: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
            result = {
                "n": args.n,
                "dim": 784,
                "shards": args.shards,
                "clients": args.clients,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "requests_per_latency_sample": args.rounds * args.per_round,
                "config": "hopfield defaults (euclidean, softmax, beta 100), k = 3",
                "configurations": table,
                "ratios": ratios,
                "largest_score_difference": worst,
            }
            for client in clients.values():
                client.close()
        finally:
            if child is not None:
                child.terminate()
                child.wait(60)
            try:
                from ray import serve

                serve.shutdown()
            except Exception as exc:  # never started
                print(f"serve.shutdown: {exc}")
            shared.close()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
