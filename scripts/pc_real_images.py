"""PC memory on real images: the paper's pure recall, the memory index, and Hopfield, side by side.

For each setting (data, N stored, hidden width; latent 256, ``fit``'s defaults) one PC
network is trained, its index built (``memory_core.PCIndex``), and the same cues go to
every method:

- stored patterns: Gaussian noise of std 0.2 (variance 0.04, the project's reading of
  the paper) and of variance 0.2 (std 0.447, the other reading), correct when the MSE to
  the stored pattern is < 0.005; the top 1/2 and 1/4 of the rows given, correct when the
  whole image's MSE is < 0.001;
- unseen images of the same distribution (the next images of the set, never stored):
  the same noisy and half cues, scored by MSE to the unseen original (what a memory
  offers for something it has not stored).

Methods (each the method's own output):
- ``pc F3``: ``PCMemory.retrieve`` as it is (noisy: at most 3 rounds of F);
- ``pc F*``: F iterated to convergence (at most ``--rounds`` rounds, stopping per cue
  when the output moves < 1e-6 MSE; partial cues are one round either way);
- ``index``: ``PCIndex.recall`` (the network's prediction from the matched latent state;
  far cues get the pure reconstruction) with ``stored`` the share it called stored;
- ``hopfield``: ``UniversalHopfield()`` (euclidean, softmax beta 100): in practice the
  nearest stored pattern, i.e. a lookup.

Data: ``fashion`` (Fashion-MNIST, D = 784), ``mnist`` (the 5000-digit sample), ``patches``
(``distinct_patches``, 32x32 colour, D = 3072: the decorrelated stand-in; its statistics
are printed and recorded beside the results).

    .venv/bin/python scripts/pc_real_images.py                        # reduced grid
    .venv/bin/python scripts/pc_real_images.py --settings fashion:1000:1024 patches:1000:1024
    .venv/bin/python scripts/pc_real_images.py --full                 # the issue's grid

One JSON line per setting in results/pc_real_images.jsonl (resumed setting by setting).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from memory_core import PCIndex, PCMemory, UniversalHopfield
from memory_core.data import distinct_patches, fashion_mnist, flatten, mnist
from memory_core.masks import pixel_mask_to_vector

NOISY_OK, PARTIAL_OK = 0.005, 0.001
NOISE = {"std 0.2": 0.2, "var 0.2": 0.2**0.5}
FRACTIONS = {"1/2": 0.5, "1/4": 0.25}


def dataset(name: str, count: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The first ``count`` images of a data set as (count, D) vectors, and their (C, H, W)."""
    if name == "fashion":
        return flatten(fashion_mnist("train", limit=count)[0]), (1, 28, 28)
    if name == "mnist":
        return flatten(mnist(limit=count)[0]), (1, 28, 28)
    if name == "patches":
        return flatten(distinct_patches(32, count=count)), (3, 32, 32)
    raise ValueError(f"unknown data set {name!r}")


def set_statistics(x: torch.Tensor) -> dict:
    """How hard a set is for a memory: principal components for 95% / 99% of the variance
    and the MSE from each image to its nearest other image."""
    x = x.double()
    var = torch.linalg.svdvals(x - x.mean(0)).square()
    share = var.cumsum(0) / var.sum()
    d = torch.cdist(x, x).square() / x.shape[1]
    d.fill_diagonal_(float("inf"))
    nn = d.min(1).values
    return {
        "n": len(x),
        "components_95": int((share < 0.95).sum()) + 1,
        "components_99": int((share < 0.99).sum()) + 1,
        "nn_mse_median": float(nn.median()),
        "nn_mse_q10": float(nn.quantile(0.1)),
        "nn_below_0.01": float((nn < 0.01).double().mean()),
    }


def summary(out: torch.Tensor, target: torch.Tensor, ok: float) -> dict:
    err = (out.float().cpu() - target.float().cpu()).square().mean(1)
    return {
        "correct": float((err < ok).float().mean()),
        "median_mse": float(err.median()),
        "mean_mse": float(err.mean()),
    }


def cue_sets(x: torch.Tensor, shape, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None, float]]:
    """name -> (cues, mask or None, criterion) for the images x."""
    c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    cues = {
        f"noise {k}": (x + s * torch.randn(x.shape, generator=gen), None, NOISY_OK) for k, s in NOISE.items()
    }
    for k, frac in FRACTIONS.items():
        pix = torch.zeros(h, w, dtype=torch.bool)
        pix[: round(h * frac)] = True  # the top rows are given
        mask = pixel_mask_to_vector(pix, c).expand_as(x)
        cues[f"given {k}"] = (torch.where(mask, x, torch.zeros(())), mask, PARTIAL_OK)
    return cues


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - start, 2)


def trained(data: str, n: int, width: int, x: torch.Tensor, args) -> tuple[PCMemory, dict]:
    """A PC memory fit on x with ``fit``'s defaults, and what its fit did; with
    ``--checkpoints`` kept there (and its fit record beside it) and reused on a rerun."""
    path = (
        None
        if args.checkpoints is None
        else args.checkpoints / f"{data}_{n}_{width}_{args.latent}_{args.seed}"
    )
    if path is not None and path.with_suffix(".json").exists():
        return PCMemory.load(path.with_suffix(".safetensors"), device=args.device), json.loads(
            path.with_suffix(".json").read_text()
        )
    pc = PCMemory(sizes=[args.latent, width, x.shape[1]], device=args.device, seed=args.seed)
    hist = pc.fit(x, progress=False)
    fit = {
        "epochs": len(hist),
        "stopped": hist.stopped,
        "final_energy": hist[-1],
        "fit_s": round(hist.seconds, 1),
        "threads": torch.get_num_threads(),
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pc.save(path.with_suffix(".safetensors"))
        path.with_suffix(".json").write_text(json.dumps(fit))
    return pc, fit


def run_setting(data: str, n: int, width: int, args) -> dict:
    pool, shape = dataset(data, n + args.unseen)
    x, unseen = pool[:n], pool[n:]
    pc, fit = trained(data, n, width, x, args)
    index = PCIndex(pc)
    _, build_s = timed(index.build, x)
    hopfield = UniversalHopfield(device=args.device)
    hopfield.store(x)
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))[: args.cues]
    converged = replace(pc.config, recall_iters=args.rounds)
    row = {
        "data": data,
        "n": n,
        "width": width,
        "latent": args.latent,
        "cues": len(sample),
        "unseen": len(unseen),
        **fit,
        "index_build_s": build_s,
        "stored": {},
        "unseen_images": {},
    }
    for group, images, seed in (("stored", x[sample], 1), ("unseen_images", unseen, 2)):
        if not len(images):
            continue
        for name, (cue, mask, ok) in cue_sets(images, shape, args.seed * 1000 + seed).items():
            if group == "unseen_images" and name in ("noise var 0.2", "given 1/4"):
                continue  # unseen images: one noise and one partial reading suffice
            cell = {}
            out, cell["pc F3 s"] = timed(pc.retrieve, cue, mask=mask)
            cell["pc F3"] = summary(out, images, ok)
            if mask is None:
                base, pc.config = pc.config, converged
                try:
                    out, cell["pc F* s"] = timed(pc.retrieve, cue)
                finally:
                    pc.config = base
                cell["pc F*"] = summary(out, images, ok)
            got, cell["index s"] = timed(index.recall, cue, mask=mask)
            cell["index"] = summary(got.output, images, ok) | {
                "called_stored": float(got.stored.float().mean()),
                "distance_median": float(got.distance.median()),
                "distance_q90": float(got.distance.quantile(0.9)),
                "evidence_median": float(got.evidence.median()),
                "called_unique": float(got.unique.float().mean()),
                "evidence_q10_q90": [float(got.evidence.quantile(0.1)), float(got.evidence.quantile(0.9))],
                "rounds_max": int(got.rounds.max()),
            }
            if group == "stored":
                right = got.nearest.cpu() == sample
                cell["index"]["nearest_right"] = float(right.float().mean())
                cell["index"]["called_stored_wrongly"] = float((got.stored.cpu() & ~right).float().mean())
                cell["index"]["called_unique_wrongly"] = float((got.unique.cpu() & ~right).float().mean())
            out, cell["hopfield s"] = timed(hopfield.retrieve, cue, mask=mask)
            cell["hopfield"] = summary(out, images, ok)
            row[group][name] = cell
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| data | N | width | cue | pc F3 | pc F* | index (called stored) | hopfield | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for group in ("stored", "unseen_images"):
            for name, c in r[group].items():
                fstar = f"{c['pc F*']['correct']:.0%}" if "pc F*" in c else "="
                tag = name if group == "stored" else f"unseen, {name}"
                lines.append(
                    f"| {r['data']} | {r['n']} | {r['width']} | {tag} | {c['pc F3']['correct']:.0%} "
                    f"({c['pc F3']['median_mse']:.4f}) | {fstar} | {c['index']['correct']:.0%} "
                    f"({c['index']['median_mse']:.4f}, {c['index']['called_stored']:.0%}) | "
                    f"{c['hopfield']['correct']:.0%} ({c['hopfield']['median_mse']:.4f}) | {r['fit_s']} |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="N in {100, 250, 500, 1000} x widths 256 .. 2048")
    ap.add_argument("--settings", nargs="+", metavar="DATA:N:WIDTH", help="e.g. fashion:1000:1024")
    ap.add_argument("--datasets", nargs="+", default=["fashion", "patches"])
    ap.add_argument("--cues", type=int, default=200, help="stored patterns cued per setting (a fixed sample)")
    ap.add_argument("--unseen", type=int, default=200, help="unseen images cued per setting")
    ap.add_argument("--rounds", type=int, default=20, help="cap of F iterated to convergence")
    ap.add_argument("--latent", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("results/pc_real_images.jsonl"))
    ap.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        help="keep the trained models here and reuse them on a rerun (e.g. /tmp/pc-models)",
    )
    ap.add_argument("--stats-only", action="store_true", help="print the data sets' statistics and stop")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stats = {d: set_statistics(dataset(d, 1000)[0]) for d in args.datasets}
    print("data statistics (first 1000):", json.dumps(stats))
    if args.stats_only:
        return
    if args.settings:
        jobs = [(d, int(n), int(w)) for d, n, w in (s.split(":") for s in args.settings)]
    elif args.full:
        jobs = [
            (d, n, w) for d in args.datasets for w in (256, 512, 1024, 2048) for n in (100, 250, 500, 1000)
        ]
    else:
        jobs = [(d, n, 1024) for d in args.datasets for n in (100, 1000)]
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    have = {(r["data"], r["n"], r["width"]) for r in done}
    jobs = [j for j in jobs if j not in have]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for data, n, width in tqdm(jobs, desc="settings", unit="setting"):
        row = run_setting(data, n, width, args) | {"data_statistics": stats.get(data)}
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        done.append(row)
        tqdm.write(table([row]))
    print(f"\nwall time {time.perf_counter() - start:.0f} s ({torch.get_num_threads()} threads)\n")
    print(table(done))


if __name__ == "__main__":
    main()
