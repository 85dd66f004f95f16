"""The Ray mode's exactness claim at full size: N = 20 000 Fashion-MNIST patterns over 1, 2 and
4 shards answer as one process does, for softmax with euclidean, manhattan and dot similarity,
with and without masks, one and three steps, and complete.

    .venv/bin/python scripts/check_cluster_exact.py [--n 20000] [--queries 20]
        [--out results/cluster_exact.json] [--keep]

A local Ray cluster (app/cluster/local.py: a head and two worker nodes) and two services in
this process: one process and the cluster's gateway. For every similarity, the memory is
made once in one process and once per shard count; the same recalls go to both
(tests/cluster_helpers.py ``queries``: noisy and half-masked cues, 3 steps, complete) and
every pair of answers must agree (``compare``: the same match ids in the same order;
vectors, scores and energies to 1e-5; completed pictures within one grey level). The suite
runs the same comparison at N = 2 000 (tests/e2e/test_cluster_exact.py). Writes the
largest differences seen per case as JSON (--out). Its temp folder (cluster, data, logs) is
removed at the end; --keep, or a failed run, keeps it for inspection (the path is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster_helpers import (  # noqa: E402
    CONFIGS,
    SharedCluster,
    ask,
    compare,
    create,
    queries,
    start_client,
    store,
    work_folder,
)

from memory_core.data import fashion_mnist, flatten  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=20, help="stored patterns recalled per case")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "cluster_exact.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (cluster, logs) at the end")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vectors = flatten(fashion_mnist("train", limit=args.n)[0])
    with work_folder("cluster-exact-", args.keep) as tmp:
        shared = SharedCluster(tmp / "ray")
        cases = []
        try:
            single = start_client(tmp / "single")
            gateway = start_client(tmp / "gateway", shared.get())
            for similarity, config in CONFIGS.items():
                create(single, similarity, config)
                store(single, similarity, vectors, batch=1000)
                asked = queries(vectors, args.queries, seed=1)
                expected = [ask(single, similarity, endpoint, body) for endpoint, body in asked]
                for shards in args.shards:
                    name = f"{similarity}-{shards}"
                    start = time.perf_counter()
                    create(gateway, name, config, shards=shards)
                    store(gateway, name, vectors, batch=1000)
                    worst: dict[str, float] = {}
                    for (endpoint, body), want in zip(asked, expected, strict=True):
                        for key, value in compare(want, ask(gateway, name, endpoint, body)).items():
                            worst[key] = max(worst.get(key, 0.0), value)
                    cases.append(
                        {"similarity": similarity, "shards": shards, "recalls": len(asked), "largest": worst}
                    )
                    print(
                        f"{similarity:9s} S={shards}: {len(asked)} recalls equal; largest {worst} ({time.perf_counter() - start:.0f} s)",
                        flush=True,
                    )
                    gateway.delete(f"/v1/memories/{name}")
                single.delete(f"/v1/memories/{similarity}")
            gateway.__exit__(None, None, None)
            single.__exit__(None, None, None)
        finally:
            shared.close()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"n": args.n, "dim": 784, "tolerance": 1e-5, "configs": CONFIGS, "cases": cases}
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
