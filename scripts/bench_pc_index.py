"""Recall latency of the memory index against the pure PC recall, side by side.

One PC memory (Fashion-MNIST, N stored, sizes [256, width, 784], fit's defaults; or a
checkpoint), its ``PCIndex``; the same cues (noisy std 0.2; top half given) to
``PCMemory.retrieve`` (the paper's pure variant: at most 3 rounds of F; completion by
conjugate gradients) and ``PCIndex.recall``, interleaved, best of ``--repeats``, one
process. Ratios carry over between machines, seconds do not.

    .venv/bin/python scripts/bench_pc_index.py --threads 1 --batches 1 16 64 --repeats 5 \
        --checkpoint /tmp/pc-models/fashion_1000_1024_256_0.safetensors

Writes results/bench_pc_index.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from memory_core import PCIndex, PCMemory
from memory_core.data import fashion_mnist, flatten
from memory_core.masks import pixel_mask_to_vector


def best_of(repeats: int, fn) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--checkpoint", type=Path, default=None, help="a PCMemory fit on the first N images")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/bench_pc_index.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = flatten(fashion_mnist("train", limit=args.n)[0])
    if args.checkpoint is not None:
        pc = PCMemory.load(args.checkpoint, device="cpu")
    else:
        pc = PCMemory(sizes=[256, args.width, 784], device="cpu", seed=0)
        pc.fit(x)
    index = PCIndex(pc)
    build_s = best_of(1, lambda: index.build(x))
    gen = torch.Generator().manual_seed(0)
    pix = torch.zeros(28, 28, dtype=torch.bool)
    pix[:14] = True
    rows = []
    pc.retrieve(x[:1])  # the recall's kept products, made once after training, out of the timings
    for batch in args.batches:
        clean = x[:batch]
        noisy = clean + 0.2 * torch.randn(clean.shape, generator=gen)
        mask = pixel_mask_to_vector(pix, 1).expand(batch, -1)
        half = torch.where(mask, clean, torch.zeros(()))
        for cue_kind, cue, m in (("noisy std 0.2", noisy, None), ("top half", half, mask)):
            times = {"pure": [], "index": []}
            for _ in range(args.repeats):  # interleaved: the machine's load hits both alike
                times["pure"].append(best_of(1, lambda c=cue, k=m: pc.retrieve(c, mask=k)))
                times["index"].append(best_of(1, lambda c=cue, k=m: index.recall(c, mask=k)))
            pure, idx = min(times["pure"]), min(times["index"])
            rows.append(
                {
                    "cue": cue_kind,
                    "batch": batch,
                    "pure_ms": round(1000 * pure, 1),
                    "index_ms": round(1000 * idx, 1),
                    "index_vs_pure": round(pure / idx, 2),
                }
            )
            print(rows[-1], flush=True)
    print("\n| cue | batch | pure ms | index ms | index speed vs pure |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cue']} | {r['batch']} | {r['pure_ms']} | {r['index_ms']} | {r['index_vs_pure']}x |")
    meta = {
        "n": args.n,
        "sizes": list(pc.sizes),
        "threads": args.threads,
        "repeats": args.repeats,
        "index_build_s": round(build_s, 1),
        "torch": torch.__version__,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"index build {build_s:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
