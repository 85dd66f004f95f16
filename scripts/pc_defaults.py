"""The measurements behind PCMemory's recall and training defaults (results/pc_defaults.md).

Experiments (``--only`` picks some; each trains its own models with ``fit``'s defaults,
seed 0, and changes one recall or training setting at a time):

- ``gain``: recall's hidden-layer precision (``RECALL_HIDDEN_GAIN``) against equal trust,
  on noisy cues (std 0.2): Fashion-MNIST N = 100 and natural patches N = 100, width 512.
- ``prior``: completion's top prior (``COMPLETE_TOP_PRIOR``, scaled by the fraction of
  entries known) against none, a fixed one and a stronger one, on the test suite's model
  (32 natural patches, width 512) at 1/8 and 1/16 of the rows; and ``energy()``'s
  familiarity (stored vs unseen patches) with the config's fixed prior against the one
  noisy recall scales to the codes.
- ``scaled``: the noisy cues' top prior, fixed values against the default scaled to the
  codes (``RECALL_PRIOR_PER_CODE_PRECISION`` x ``code_precision``): Fashion-MNIST N = 100
  at widths 256, 512, 1024.
- ``tail``: ``stop_anneal`` and Adam's moments in checkpoints: 50 64x64 patches, width
  512; a second ``fit`` call from the trained model with a fresh Adam (as after loading a
  checkpoint without Adam's state) or with its moments, stopping early with an annealing
  tail of 0, 20 or 40 epochs, or not at all; completion of 1/2 .. 1/16 of the rows.

    nice -n 10 .venv/bin/python scripts/pc_defaults.py --threads 1

Writes results/pc_defaults.json (one entry per experiment, merged) and prints tables.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from memory_core import PCMemory
from memory_core.data import fashion_mnist, flatten, natural_patches
from memory_core.masks import pixel_mask_to_vector

NOISY_OK, PARTIAL_OK = 0.005, 0.001


def fitted(x: torch.Tensor, width: int, **config) -> PCMemory:
    start = time.perf_counter()
    pc = PCMemory(sizes=[256, width, x.shape[1]], device="cpu", seed=0, **config)
    history = pc.fit(x, progress=False)
    print(
        f"  fit N = {len(x)}, width {width}: {len(history)} epochs, {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    return pc


def noisy_correct(pc: PCMemory, x: torch.Tensor, **recall) -> float:
    """Share of noisy cues (std 0.2, seed 0) recalled within MSE 0.005, with ``recall``
    replacing config fields for this call only."""
    cue = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    trained = pc.config
    pc.config = dataclasses.replace(trained, **recall)
    try:
        return float(((pc.retrieve(cue) - x).square().mean(1) < NOISY_OK).float().mean())
    finally:
        pc.config = trained


def top_rows(x: torch.Tensor, side: int, fraction: float) -> torch.Tensor:
    pix = torch.zeros(side, side, dtype=torch.bool)
    pix[: max(1, round(side * fraction))] = True
    return pixel_mask_to_vector(pix, x.shape[1] // (side * side)).expand_as(x)


def partial_correct(pc: PCMemory, x: torch.Tensor, side: int, fraction: float, **recall) -> float:
    mask = top_rows(x, side, fraction)
    trained = pc.config
    pc.config = dataclasses.replace(trained, **recall)
    try:
        out = pc.retrieve(torch.where(mask, x, torch.zeros(())), mask=mask)
    finally:
        pc.config = trained
    return float(((out - x).square().mean(1) < PARTIAL_OK).float().mean())


def gain() -> dict:
    rows = {}
    data = {
        "fashion N=100": flatten(fashion_mnist("train", limit=100)[0]),
        "patches N=100": flatten(natural_patches(32, count=100)),
    }
    for name, x in data.items():
        pc = fitted(x, 512)
        rows[name] = {
            "equal trust, no top prior": noisy_correct(
                pc, x, recall_precisions=(1.0, 1.0), recall_prior_precision=0.0
            ),
            "gain 3, no top prior": noisy_correct(pc, x, recall_prior_precision=0.0),
            "equal trust, default prior": noisy_correct(pc, x, recall_precisions=(1.0, 1.0)),
            "gain 3 (default)": noisy_correct(pc, x),
            "gain 10": noisy_correct(pc, x, recall_precisions=(10.0, 1.0)),
            "gain 30": noisy_correct(pc, x, recall_precisions=(30.0, 1.0)),
        }
        print(f"  gain {name}: {rows[name]}", flush=True)
    return rows


def prior() -> dict:
    patches = flatten(natural_patches(32, count=40))
    torch.manual_seed(0)
    pc = PCMemory(sizes=[256, 512, 3072], device="cpu")  # the test suite's model (tests/unit/test_pc.py)
    pc.fit(patches[:32], progress=False)
    x = patches[:32]
    rows = {}
    for fraction in (1 / 8, 1 / 16):
        rows[f"1/{round(1 / fraction)}"] = {
            "no prior": partial_correct(pc, x, 32, fraction, complete_prior_precision=0.0),
            "0.03 fixed": partial_correct(pc, x, 32, fraction, complete_prior_precision=0.03 / fraction),
            "0.03 scaled (default)": partial_correct(pc, x, 32, fraction),
            "0.1 scaled": partial_correct(pc, x, 32, fraction, complete_prior_precision=0.1),
        }
        print(f"  prior 1/{round(1 / fraction)}: {rows[f'1/{round(1 / fraction)}']}", flush=True)
    fixed_stored, fixed_unseen = pc.energy(x), pc.energy(patches[32:])
    scaled_pi = pc.recall_pi[0]
    trained = pc.config
    pc.config = dataclasses.replace(trained, recall_prior_precision=scaled_pi)
    scaled_stored, scaled_unseen = pc.energy(x), pc.energy(patches[32:])
    pc.config = trained
    rows["energy"] = {
        "fixed prior": pc.config.recall_pi[0],
        "fixed: stored max, unseen min": [float(fixed_stored.max()), float(fixed_unseen.min())],
        "scaled prior": scaled_pi,
        "scaled: stored max, unseen min": [float(scaled_stored.max()), float(scaled_unseen.min())],
    }
    print(f"  energy: {rows['energy']}", flush=True)
    return rows


def scaled() -> dict:
    x = flatten(fashion_mnist("train", limit=100)[0])
    rows = {}
    for width in (256, 512, 1024):
        pc = fitted(x, width)
        row = {
            "code_precision": pc.code_precision,
            "scaled prior": pc.recall_pi[0],
            "default": noisy_correct(pc, x),
        }
        for p in (0.03, 0.1, 0.3, 1.0, 3.0):
            row[str(p)] = noisy_correct(pc, x, recall_prior_precision=p)
        best = max((0.03, 0.1, 0.3, 1.0, 3.0), key=lambda p: row[str(p)])
        row["best fixed / code precision"] = best / pc.code_precision
        rows[f"width {width}"] = row
        print(f"  scaled width {width}: {row}", flush=True)
    return rows


def tail() -> dict:
    x = flatten(natural_patches(64, count=50))
    first = fitted(x, 512)
    fractions = (1 / 2, 1 / 4, 1 / 8, 1 / 16)

    def completions(pc: PCMemory) -> list[float]:
        return [partial_correct(pc, x, 64, f) for f in fractions]

    rows = {"before the second call": completions(first)}
    variants = {
        "fresh Adam, no tail": ({"stop_anneal": 0}, False),
        "fresh Adam, tail 20": ({"stop_anneal": 20}, False),
        "fresh Adam, tail 40 (default)": ({}, False),
        "fresh Adam, no early stop": ({"stop_energy": 0.0}, False),
        "Adam's moments kept, no tail": ({"stop_anneal": 0}, True),
    }
    for name, (change, keep_adam) in variants.items():
        pc = copy.deepcopy(first)
        pc.config = dataclasses.replace(pc.config, **change)
        if not keep_adam:
            pc._opt = None  # as a checkpoint without Adam's state loads
        history = pc.fit(x, progress=False)
        rows[name] = {"epochs": len(history), "stopped": history.stopped, "completed": completions(pc)}
        print(f"  tail {name}: {rows[name]}", flush=True)
    return rows


EXPERIMENTS = {"gain": gain, "prior": prior, "scaled": scaled, "tail": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/pc_defaults.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.only:
        print(f"{name}:", flush=True)
        start = time.perf_counter()
        results[name] = {
            "rows": EXPERIMENTS[name](),
            "seconds": round(time.perf_counter() - start),
            "threads": args.threads,
        }
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v["rows"] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
