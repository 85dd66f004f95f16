"""The Ray mode against one process, side by side in one run: recall latency and throughput at
S = 1, 2, 4 shards, the merge's share of a recall, and the largest memory that fits a fixed
per-process memory limit with 1 shard and with 4.

    .venv/bin/python scripts/bench_scale.py [--n 20000] [--shards 1 2 4] [--rounds 6]
        [--per-round 30] [--batch 64] [--limit-mib 640] [--out results/bench_scale.json] [--keep]

What it does:

1. Starts a local Ray cluster (app/cluster/local.py: a head and two worker nodes on this
   machine) and two services in this process (FastAPI TestClient, no network): one process
   (the baseline) and the gateway of the cluster. Memory: kind hopfield, shape [1, 28, 28],
   the default config (euclidean, softmax, beta 100), the first N Fashion-MNIST training
   images; in one process once, and in the cluster once per shard count S.
2. Latency: ``POST .../retrieve`` with one noisy stored image (std 0.3), k = 3, one at a
   time; the configurations take turns within each round (so load on the shared machine
   hits them alike); median and 90th percentile per configuration. Every sharded answer is
   checked against the one-process answer to the same cue (same match ids; largest
   difference of vector, score and energy reported).
3. Throughput: ``recall_batch`` of ``--batch`` cues at once (what the micro-batcher runs
   under load), recalls per second, same turns.
4. Merge overhead: per sharded recall, the gateway's merge arithmetic (``merge_partials``,
   ``finish_partial``, ``merge_tops`` on the shards' answers), the shards' own compute (the
   slowest shard per fan-out), and the rest (Ray calls, serialisation), as fractions of the
   recall's time at the gateway.
5. Capacity: for S = 1 and S = 4, random patterns (D = 784) are stored in batches (of
   ``--capacity-step`` patterns per shard) until some shard process's resident memory
   (VmRSS) passes ``--limit-mib``; the largest N stored while every shard stayed under it.

Threads: one torch thread in this process and in each shard (AMS_SHARD_THREADS=1). Prints
a table and writes JSON (--out). Its temp folder (cluster, data, logs) is removed at the end;
--keep, or a failed run, keeps it for inspection (the path is printed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster_helpers import SharedCluster, compare, start_client, work_folder  # noqa: E402

from app.storage import NewPattern  # noqa: E402
from memory_core.data import fashion_mnist, flatten  # noqa: E402
from memory_core.partials import finish_partial, merge_partials, merge_tops  # noqa: E402


def store(client, name: str, vectors: torch.Tensor, batch: int = 1000) -> float:
    start = time.perf_counter()
    for at in range(0, len(vectors), batch):
        body = {
            "patterns": [
                {"id": f"p{at + i}", "vector": v.tolist()} for i, v in enumerate(vectors[at : at + batch])
            ]
        }
        r = client.post(f"/v1/memories/{name}/patterns", json=body)
        assert r.status_code == 201, r.text
    return len(vectors) / (time.perf_counter() - start)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def merge_share(live, cue: torch.Tensor, reps: int = 5) -> dict[str, float]:
    """Times one sharded recall and splits it: merge arithmetic, slowest shard per fan-out, rest."""
    captured: list = []
    fanout = live._fanout

    def spy(query):
        answers = fanout(query)
        captured.append(answers)
        return answers

    live._fanout = spy
    totals, merges, shards = [], [], []
    try:
        for _ in range(reps):
            captured.clear()
            start = time.perf_counter()
            live.recall_batch(cue, None, 3, 1)
            totals.append(time.perf_counter() - start)
            shards.append(sum(max(a.seconds for a in answers) for answers in captured))
            t0 = time.perf_counter()
            for answers in captured:
                parts = [a.partial for a in answers if a.partial is not None]
                finish_partial(merge_partials(parts, k=live.sep.k), live.sep)
                tops = [a.top for a in answers if a.top is not None]
                if tops:
                    merge_tops(tops, 3)
            merges.append(time.perf_counter() - t0)
    finally:
        live._fanout = fanout
    total, merge, shard = (statistics.median(x) for x in (totals, merges, shards))
    return {
        "recall_ms": 1e3 * total,
        "merge_fraction": merge / total,
        "shard_compute_fraction": shard / total,
        "calls_and_serialisation_fraction": max(0.0, total - merge - shard) / total,
    }


def capacity(gateway, shards: int, limit_mib: float, step: int, most: int) -> dict:
    name = f"cap{shards}"
    r = gateway.post(
        "/v1/memories", json={"name": name, "kind": "hopfield", "shape": [784], "config": {"shards": shards}}
    )
    assert r.status_code == 201, r.text
    registry = gateway.app.state.service.registry
    live = registry.get(name)
    pids = [p["pid"] for p in r.json()["placement"]]
    baseline = max(rss_mib(pid) for pid in pids)
    gen = np.random.default_rng(0)
    stored, fitted, peak = 0, 0, baseline
    while stored < most:
        vectors = gen.random((step * shards, 784), dtype=np.float32)  # ~step per shard per store
        live.store([NewPattern(id=f"r{stored + i}", vector=v) for i, v in enumerate(vectors)])
        stored += len(vectors)
        peak = max(rss_mib(pid) for pid in pids)
        print(f"  S={shards}: {stored} patterns, largest shard RSS {peak:.0f} MiB", flush=True)
        if peak > limit_mib:
            break
        fitted = stored
    gateway.delete(f"/v1/memories/{name}")
    return {
        "shards": shards,
        "largest_n": fitted,
        "dim": 784,
        "baseline_rss_mib": baseline,
        "last_rss_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--limit-mib", type=float, default=640.0)
    parser.add_argument("--capacity-step", type=int, default=2500, help="patterns per shard per store")
    parser.add_argument("--capacity-most", type=int, default=400000)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_scale.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (cluster, logs) at the end")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = fashion_mnist("train", limit=args.n)[0]
    vectors = flatten(images)  # (N, 784)
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(0, args.n, (400,), generator=gen)
    cues = (vectors[picks] + 0.3 * torch.randn(400, 784, generator=gen)).clamp(0, 1)
    with work_folder("bench-scale-", args.keep) as tmp:
        shared = SharedCluster(tmp / "ray")
        result: dict = {"n": args.n, "dim": 784, "config": "hopfield defaults (euclidean, softmax, beta 100)"}
        try:
            single = start_client(tmp / "single")
            gateway = start_client(tmp / "gateway", shared.get(), shard_threads=1)
            names = {"one process": (single, "m")} | {f"S={s}": (gateway, f"m{s}") for s in args.shards}
            rates = {}
            for label, (client, name) in names.items():
                config = {} if client is single else {"shards": int(label[2:])}
                r = client.post(
                    "/v1/memories",
                    json={"name": name, "kind": "hopfield", "shape": [1, 28, 28], "config": config},
                )
                assert r.status_code == 201, r.text
                rates[label] = store(client, name, vectors)
                print(f"stored {args.n} into {label} at {rates[label]:.0f} patterns/s", flush=True)
            latency = {label: [] for label in names}
            worst = {"vector": 0.0, "score": 0.0, "energy": 0.0}
            at = 0
            for rnd in range(args.rounds):
                for _ in range(args.per_round):
                    body = {"vector": cues[at % len(cues)].tolist(), "k": 3, "include_vector": True}
                    at += 1
                    answers = {}
                    for label, (client, name) in names.items():
                        start = time.perf_counter()
                        r = client.post(f"/v1/memories/{name}/retrieve", json=body)
                        latency[label].append(time.perf_counter() - start)
                        assert r.status_code == 200, r.text
                        answers[label] = r.json()
                    for label in names:
                        if label != "one process":
                            for key, value in compare(answers["one process"], answers[label]).items():
                                worst[key] = max(worst.get(key, 0.0), value)
                print(f"latency round {rnd + 1}/{args.rounds} done", flush=True)
            batch = cues[: args.batch]
            throughput = {label: [] for label in names}
            for _ in range(args.rounds):
                for label, (client, name) in names.items():
                    live = client.app.state.service.registry.get(name)
                    start = time.perf_counter()
                    live.recall_batch(batch, None, 3, 1)
                    throughput[label].append(len(batch) / (time.perf_counter() - start))
            registry = gateway.app.state.service.registry
            overhead = {f"S={s}": merge_share(registry.get(f"m{s}"), cues[:1]) for s in args.shards}
            table = {}
            base = statistics.median(latency["one process"])
            for label in names:
                med = statistics.median(latency[label])
                table[label] = {
                    "latency_ms_median": 1e3 * med,
                    "latency_ms_p90": 1e3 * float(np.percentile(latency[label], 90)),
                    "latency_vs_one_process": med / base,
                    "batch_recalls_per_s": statistics.median(throughput[label]),
                    "store_patterns_per_s": rates[label],
                }
            result |= {"configurations": table, "merge_overhead": overhead, "largest_difference": worst}
            for label in ("one process", *[f"S={s}" for s in args.shards]):
                t = table[label]
                print(
                    f"{label:12s} latency median {t['latency_ms_median']:7.2f} ms  p90 {t['latency_ms_p90']:7.2f} ms  "
                    f"x{t['latency_vs_one_process']:.2f}  batch of {args.batch}: {t['batch_recalls_per_s']:7.0f} recalls/s"
                )
            for label, o in overhead.items():
                print(
                    f"{label}: recall {o['recall_ms']:.2f} ms = merge {o['merge_fraction']:.1%} + shards "
                    f"{o['shard_compute_fraction']:.1%} + calls/serialisation {o['calls_and_serialisation_fraction']:.1%}"
                )
            for label in list(names)[1:]:
                gateway.delete(f"/v1/memories/{names[label][1]}")
            result["capacity"] = {
                "limit_mib": args.limit_mib,
                "runs": [
                    capacity(gateway, s, args.limit_mib, args.capacity_step, args.capacity_most)
                    for s in (1, 4)
                ],
            }
            for run in result["capacity"]["runs"]:
                print(
                    f"capacity at {args.limit_mib:.0f} MiB per process: S={run['shards']}: N = {run['largest_n']} x 784"
                )
            gateway.__exit__(None, None, None)
            single.__exit__(None, None, None)
        finally:
            shared.close()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
