"""Partial-cue completion of PCMemory: conjugate gradients against the heavy ball, side by
side in one process on one trained model.

Stores N = 50 natural 64x64 patches (the fidelity experiment's partial setting, fit's
defaults), then completes every pattern from the top 1/4 of its rows (and the other
fractions given) with each variant, interleaved (one run of each per round, best of
``--repeats``: the least disturbed by load):

- ``cg``: the default (``complete_method="cg"``, the top prior scaled by the known
  fraction; iterations until no output moves by more than ``complete_tol`` = 1e-9 in 25,
  at most ``complete_steps`` = 2000: the table gives how many it ran);
- ``cg-500``: the same for a fixed 500 iterations (the previous default);
- ``heavy-ball``: the default before conjugate gradients (``complete_method="momentum"``, 2000 steps of
  ``complete_lr`` 1 with momentum 0.9, no top prior);
- ``heavy-ball+prior``: the heavy ball with the same prior as ``cg`` (what the solver
  alone changes).

Prints a table (seconds, correct at MSE < 0.001 over the whole image, median MSE) and
writes JSON.

    .venv/bin/python scripts/bench_completion.py --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from memory_core import PCMemory
from memory_core.checks import resolve_device
from memory_core.data import flatten, natural_patches
from memory_core.masks import pixel_mask_to_vector

PARTIAL_OK = 0.001
VARIANTS = {
    "cg": {},
    "cg-500": {"complete_steps": 500, "complete_tol": 0.0},
    "heavy-ball": {"complete_method": "momentum", "complete_steps": 2000, "complete_prior_precision": 0.0},
    "heavy-ball+prior": {"complete_method": "momentum", "complete_steps": 2000},
}


def iterations(pc: PCMemory, trained, change: dict, x: torch.Tensor, mask: torch.Tensor) -> int:
    """The iterations (or steps) a variant runs on these cues: CG's stop is data-dependent."""
    cfg = dataclasses.replace(trained, **change)
    if cfg.complete_method != "cg":
        return cfg.complete_steps
    known = mask.to(x.dtype)
    trace: list[float] = []
    pc._relax_cg(
        x * known,
        known,
        cfg.complete_steps,
        pc._partial_pi(cfg.complete_pi, known),
        trace=trace,
        tol=cfg.complete_tol,
    )
    return len(trace) - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/bench_completion.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    x = flatten(natural_patches(64, count=args.n)).to(device)
    pc = PCMemory(sizes=[256, args.width, x.shape[1]], device=device, seed=0)
    history = pc.fit(x, progress=True)
    trained = pc.config
    rows = []
    bar = tqdm(total=len(args.fractions) * args.repeats * len(VARIANTS), desc="completions", unit="batch")
    for frac in args.fractions:
        pix = torch.zeros(64, 64, dtype=torch.bool)
        pix[: max(1, round(64 * frac))] = True
        mask = pixel_mask_to_vector(pix, 3).to(device).expand_as(x)
        cue = torch.where(mask, x, torch.zeros_like(x))
        best = {name: float("inf") for name in VARIANTS}
        quality = {}
        for _ in range(args.repeats):
            for name, change in VARIANTS.items():  # interleaved: load hits every variant alike
                pc.config = dataclasses.replace(trained, **change)
                start = time.perf_counter()
                out = pc.retrieve(cue, mask=mask)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best[name] = min(best[name], time.perf_counter() - start)
                err = (out - x).square().mean(1).cpu()
                quality[name] = {
                    "correct": float((err < PARTIAL_OK).float().mean()),
                    "median_mse": float(err.median()),
                }
                bar.update()
        for name in VARIANTS:
            rows.append(
                {
                    "fraction": frac,
                    "variant": name,
                    "seconds": best[name],
                    "vs_heavy_ball": best["heavy-ball"] / best[name],
                    "iterations": iterations(pc, trained, VARIANTS[name], x, mask),
                    **quality[name],
                }
            )
    bar.close()
    pc.config = trained
    print(
        f"\nN = {args.n}, width {args.width}, fit {len(history)} epochs in {history.seconds:.0f} s; "
        f"{device}, {torch.get_num_threads()} threads, best of {args.repeats}\n"
    )
    print("| given | variant | iterations | seconds | speed vs heavy-ball | correct | median MSE |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| 1/{round(1 / r['fraction'])} | {r['variant']} | {r['iterations']} | {r['seconds']:.1f} | "
            f"{r['vs_heavy_ball']:.2f}x | {r['correct']:.0%} | {r['median_mse']:.5f} |"
        )
    meta = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "n": args.n,
        "width": args.width,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
