"""Latency of a PC memory's noisy recall at the service's batch sizes: recall as shipped
against the previous recall, side by side in one process.

- ``kept`` (shipped): ``PCMemory.retrieve``: the weights' transposes and the sensory
  Gram matrix G = W_x^T W_x are kept between calls until a weight changes, and every
  relaxation step takes the Gram message ((B, H) x (H, H)).
- ``first``: the same, with nothing kept yet (the first recall after a training).
- ``previous``: the recall before this change (``_denoise(reuse=False)``): transposes
  and, where a FLOP count found it cheaper, G made afresh in every round of F; the
  count picked the direct message ((B, H) x (H, D) twice a step) for small batches.

Each variant runs once per round, interleaved, best of ``--repeats`` rounds (the least
disturbed by load); the noisy cues (std 0.2) take the same 3 rounds of F in every variant.
The models are trained briefly (``--epochs``): the time of a recall depends on the shapes
and the number of rounds, not on how well the set is stored.

    .venv/bin/python scripts/bench_pc_recall.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from memory_core import PCMemory
from memory_core.checks import resolve_device
from memory_core.data import flatten, natural_patches


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 2048], help="hidden widths")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/bench_pc_recall.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    x = flatten(natural_patches(32, count=max(args.batches))).to(device)  # (N, 3072)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    bar = tqdm(total=len(args.widths) * len(args.batches), desc="recall latency")
    for width in args.widths:
        pc = PCMemory(sizes=[256, width, x.shape[1]], device=device, seed=0, epochs=args.epochs)
        pc.fit(x[:32], progress=False)

        def first(cue: torch.Tensor, pc: PCMemory = pc) -> None:
            pc._recall_cache = None  # as after a training: nothing kept
            pc.retrieve(cue)

        for batch in args.batches:
            cue = x[:batch] + 0.2 * noise[:batch]
            variants = {
                "kept": lambda c=cue, pc=pc: pc.retrieve(c),
                "first": lambda c=cue: first(c),
                "previous": lambda c=cue, pc=pc: pc._denoise(c, reuse=False),
            }
            for fn in variants.values():  # warm-up
                fn()
            best = {name: float("inf") for name in variants}
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    best[name] = min(best[name], timed(fn, device))
            same = float((pc.retrieve(cue) - pc._denoise(cue, reuse=False)).abs().max())
            rows.append(
                {
                    "width": width,
                    "batch": batch,
                    **{f"t_{k}": v for k, v in best.items()},
                    "speedup_kept": best["previous"] / best["kept"],
                    "speedup_first": best["previous"] / best["first"],
                    "max_abs_diff": same,
                }
            )
            bar.update()
    bar.close()
    print(
        "| width | batch | previous ms | first ms | kept ms | speed-up first | speed-up kept | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['width']} | {r['batch']} | {1000 * r['t_previous']:.0f} | {1000 * r['t_first']:.0f} | "
            f"{1000 * r['t_kept']:.0f} | {r['speedup_first']:.2f}x | {r['speedup_kept']:.2f}x | "
            f"{r['max_abs_diff']:.1e} |"
        )
    meta = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "sizes": [256, "H", 3072],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
