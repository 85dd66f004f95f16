"""Issue 27's goal through the service: kind pc with its default config, on real images.

For each data set: start a real server (``uvicorn app.main:app`` on a free loopback port,
a fresh data directory), create a memory ``{"kind": "pc", "shape": [C, H, W]}`` with
``config`` {} (the service's defaults for that shape: what users get) or ``--config``,
store the first N images as PNG files, train it by ``POST .../train`` and follow the job,
then send cues over HTTP, ``--concurrency`` at a time (the service micro-batches them):

- 100 of the stored images (a fixed sample): Gaussian noise of std 0.2 and of variance
  0.2 (``retrieve``, JSON vector, ``include_vector``), correct when the MSE to the stored
  image is < 0.005; the top 1/2 and 1/4 of the rows given (``complete``, multipart PNG +
  mask picture, the PNG answer decoded), correct when the whole image's MSE is < 0.001;
- 100 unseen images (the next ones of the set, never stored), noisy (std 0.2) and top
  half: MSE to the unseen original, and how many the recall report called stored.

Per cue set: the share correct, median MSE, the report's ``stored`` / ``unique`` shares,
how often a cue called stored named the right pattern, and the answers' latency.
Training: the job's own seconds (started -> finished), epochs and stop reason, and the
machine's load average sampled while it ran (the machine is shared).

    nice -n 10 .venv/bin/python scripts/pc_service_check.py --datasets fashion mnist patches

Data: ``fashion`` (Fashion-MNIST training images), ``mnist`` (the 5000-digit sample),
``patches`` (``distinct_patches``, 32x32 colour: the decorrelated stand-in), ``patches64``
(the same at 64x64, D = 12288: the larger default's shape). Writes JSON
(``--out``, one entry per data set, merged into what is there) and prints a table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import start_server  # the same server start as the load test

from memory_core.data import distinct_patches, fashion_mnist, flatten, mnist
from memory_core.images import decode_image, mask_to_png, tensor_to_png
from memory_core.masks import pixel_mask_to_vector

NOISY_OK, PARTIAL_OK = 0.005, 0.001
NOISE = {"noise std 0.2": 0.2, "noise var 0.2": 0.2**0.5}
GIVEN = {"given 1/2": 0.5, "given 1/4": 0.25}


def dataset(name: str, count: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The first ``count`` images of a data set (count, C, H, W) in [0, 1], and (C, H, W)."""
    if name == "fashion":
        images = fashion_mnist("train", limit=count)[0]
    elif name == "mnist":
        images = mnist(limit=count)[0]
    elif name == "patches":
        images = distinct_patches(32, count=count)
    elif name == "patches64":  # D = 12288: above the width-1024 default's D <= 4096
        images = distinct_patches(64, count=count)
    else:
        raise ValueError(f"unknown data set {name!r}")
    return images, tuple(images.shape[1:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Client:
    """The HTTP calls of this check (one httpx client, keep-alive)."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)

    def ok(self, response: httpx.Response, status: int = 200) -> dict:
        if response.status_code != status:
            raise SystemExit(
                f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
            )
        return response.json()

    def retrieve(self, name: str, vector: torch.Tensor) -> tuple[torch.Tensor, dict, float]:
        start = time.perf_counter()
        body = {"vector": vector.tolist(), "include_vector": True, "k": 1}
        got = self.ok(self.http.post(f"/v1/memories/{name}/retrieve", json=body))
        return torch.tensor(got["pattern"]["vector"]), got["recall"], time.perf_counter() - start

    def complete(
        self, name: str, image: torch.Tensor, known: torch.Tensor
    ) -> tuple[torch.Tensor, dict, float]:
        """``complete`` with multipart PNG + mask picture, the PNG answer: (vector, report, s)."""
        start = time.perf_counter()
        files = {"image": ("cue.png", tensor_to_png(image)), "mask": ("mask.png", mask_to_png(known))}
        r = self.http.post(f"/v1/memories/{name}/complete", files=files, headers={"Accept": "image/png"})
        if r.status_code != 200:
            raise SystemExit(f"complete: {r.status_code} {r.text}")
        report = json.loads(r.headers["X-AMS-Recall"])
        return flatten(decode_image(r.content)[None])[0], report, time.perf_counter() - start


def store_and_train(client: Client, name: str, images: torch.Tensor, config: dict) -> dict:
    """Create the memory, store the images (PNG, 100 a request), train; the job's record."""
    created = client.ok(
        client.http.post(
            "/v1/memories",
            json={"name": name, "kind": "pc", "shape": list(images.shape[1:]), "config": config},
        ),
        201,
    )
    for i in range(0, len(images), 100):
        batch = [
            {"id": f"p{j}", "image": _b64(tensor_to_png(images[j]))}
            for j in range(i, min(i + 100, len(images)))
        ]
        client.ok(client.http.post(f"/v1/memories/{name}/patterns", json={"patterns": batch}), 201)
    job = client.ok(client.http.post(f"/v1/memories/{name}/train", json={}), 202)
    loads, last = [], 0.0
    while job["status"] in ("queued", "running"):
        time.sleep(5)
        job = client.ok(client.http.get(f"/v1/jobs/{job['id']}"))
        loads.append(os.getloadavg()[0])
        if time.monotonic() - last > 60:
            last = time.monotonic()
            print(
                f"  {name}: epoch {job['epoch']}/{job['epochs']} energy {job['energy']} eta {job['eta_seconds']} s "
                f"load {loads[-1]:.1f}",
                flush=True,
            )
    if job["status"] != "succeeded":
        raise SystemExit(f"training failed: {job}")
    started = job["started_at"].replace("Z", "+00:00")
    finished = job["finished_at"].replace("Z", "+00:00")
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return {
        "config": created["config"],
        "train_s": round(seconds, 1),
        "epochs": job["epoch"],
        "stop_reason": job["stop_reason"],
        "final_energy": job["energy"],
        "load_while_training": [
            round(min(loads), 1),
            round(statistics.median(loads), 1),
            round(max(loads), 1),
        ]
        if loads
        else None,
    }


def score(outs: list, targets: torch.Tensor, ok: float, truth: list[str] | None) -> dict:
    """A cue set's row: share correct, MSE, the reports' flags, latency."""
    out = torch.stack([o[0] for o in outs])
    reports = [o[1] for o in outs]
    err = (out - targets).square().mean(1)
    stored = [r["stored"] for r in reports]
    row = {
        "cues": len(outs),
        "correct": round(float((err < ok).float().mean()), 4),
        "median_mse": float(err.median()),
        "mean_mse": float(err.mean()),
        "called_stored": round(sum(stored) / len(outs), 4),
        "unique": round(sum(r["unique"] for r in reports) / len(outs), 4),
        "index": all(r["index"] for r in reports),
        "latency_median_s": round(statistics.median(o[2] for o in outs), 3),
    }
    if truth is not None:  # of the cues called stored, the share that named the right pattern
        named = [r["nearest"]["id"] == t for r, t in zip(reports, truth, strict=True) if r["stored"]]
        row["right_when_stored"] = round(sum(named) / len(named), 4) if named else None
    return row


def check(
    client: Client, name: str, images: torch.Tensor, shape, sample: torch.Tensor, unseen: torch.Tensor, args
):
    """Every cue set of one data set; name -> row."""
    c, h, w = shape
    x = flatten(images)
    gen = torch.Generator().manual_seed(args.seed)
    rows = {}
    pool = ThreadPoolExecutor(args.concurrency)

    def noisy(vectors: torch.Tensor, std: float) -> list:
        cues = vectors + std * torch.randn(vectors.shape, generator=gen)
        return list(pool.map(lambda v: client.retrieve(name, v), cues))

    def partial(imgs: torch.Tensor, fraction: float) -> list:
        known = torch.zeros(h, w, dtype=torch.bool)
        known[: round(h * fraction)] = True
        cues = imgs * pixel_mask_to_vector(known, c).reshape(c, h, w)  # unknown pixels black
        return list(pool.map(lambda img: client.complete(name, img, known), cues))

    truth = [f"p{int(i)}" for i in sample]
    for label, std in NOISE.items():
        rows[label] = score(noisy(x[sample], std), x[sample], NOISY_OK, truth)
        print(f"  {name} {label}: {rows[label]}", flush=True)
    for label, fraction in GIVEN.items():
        rows[label] = score(partial(images[sample], fraction), x[sample], PARTIAL_OK, truth)
        print(f"  {name} {label}: {rows[label]}", flush=True)
    rows["unseen noise std 0.2"] = score(noisy(flatten(unseen), 0.2), flatten(unseen), NOISY_OK, None)
    rows["unseen given 1/2"] = score(partial(unseen, 0.5), flatten(unseen), PARTIAL_OK, None)
    for label in ("unseen noise std 0.2", "unseen given 1/2"):
        print(f"  {name} {label}: {rows[label]}", flush=True)
    pool.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["fashion", "mnist", "patches"])
    ap.add_argument("--n", type=int, default=1000, help="images stored and trained on")
    ap.add_argument("--cues", type=int, default=100, help="stored images cued, and unseen images")
    ap.add_argument("--config", type=json.loads, default={}, help="the memory's config ({} = defaults)")
    ap.add_argument("--label", default="default", help="names the config in the JSON")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads (AMS_TORCH_THREADS)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/pc_service.json"))
    args = ap.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for data in args.datasets:
        images, shape = dataset(data, args.n + args.cues)
        stored, unseen = images[: args.n], images[args.n :]
        sample = torch.randperm(args.n, generator=torch.Generator().manual_seed(args.seed))[: args.cues]
        with tempfile.TemporaryDirectory(prefix="pc-service-") as tmp:
            proc, port = start_server(Path(tmp) / "data", {"AMS_TORCH_THREADS": str(args.threads)})
            try:
                client = Client(port)
                print(
                    f"{data}: storing {args.n} images {list(shape)}, training (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                training = store_and_train(client, data, stored, args.config)
                print(f"  trained in {training['train_s']} s: {training}", flush=True)
                rows = check(client, data, stored, shape, sample, unseen, args)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        results[f"{data}:{args.n}:{args.label}"] = {
            "data": data,
            "n": args.n,
            "shape": list(shape),
            "request_config": args.config,
            "server_threads": args.threads,
            "concurrency": args.concurrency,
            **training,
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(
        "\n| data | N | config | cue | correct | median MSE | called stored | right when stored | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key, entry in results.items():
        for cue, row in entry["rows"].items():
            right = row.get("right_when_stored")
            print(
                f"| {entry['data']} | {entry['n']} | {key.split(':')[-1]} | {cue} | {row['correct']:.0%} | "
                f"{row['median_mse']:.4f} | {row['called_stored']:.0%} | "
                f"{'-' if right is None else f'{right:.0%}'} | {entry['train_s']} |"
            )


if __name__ == "__main__":
    main()
