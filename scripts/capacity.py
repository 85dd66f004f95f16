"""Capacity of universal Hopfield networks (Millidge et al., ICML 2022, the capacity-vs-N figures).

For each data set (Fashion-MNIST 28x28, natural 32x32 colour patches), similarity (dot,
cosine, euclidean, manhattan, hamming), separation (softmax with a tuned beta, max) and
corruption, store N patterns, corrupt C of them, retrieve once (one step, as in the
paper) and score:

- correct: the retrieved output's nearest stored pattern (euclidean) is the cue's
  original (DESIGN.md: "for universal Hopfield capacity, the nearest stored pattern is
  the right one");
- mse_ok: the output is within mean squared error 0.005 of the original ([0, 1] pixels).

Corruptions: ``half`` (bottom half unknown: masked, mask-aware scores), ``quarter``
(a random 25% of the pixels known, per cue, all channels of a pixel alike) and ``noise``
(Gaussian noise of standard deviation 0.5 added to every entry, NOT clipped to [0, 1];
no mask). Unknown entries of a masked cue hold 0; the similarity ignores them anyway.

Beta: for each similarity, softmax is first swept over a grid of betas at the largest N
(10 000: the hardest, since the gap between the best and second-best score shrinks as N
grows, and a beta sharp enough there is sharp enough below) with a separate sample of
cues (seed differs from the evaluation's), on both data sets and all three corruptions;
the beta kept is the smallest one whose mean score (correct and mse_ok averaged) is
within 0.5 points of the best, i.e. the softest separation that loses no recall. The
summary at the end says which config recalls best overall, which is what
``HopfieldConfig``'s defaults are set from (the "default" rows check them).

    .venv/bin/python scripts/capacity.py                # full run: JSON, PNG, tables
    .venv/bin/python scripts/capacity.py --quick        # N <= 1000, 50 cues: a smoke run
    .venv/bin/python scripts/capacity.py --datasets mnist --sizes 10,50,100,500,1000,5000 \
        --out results/capacity_mnist.json               # this protocol on the MNIST sample
    .venv/bin/python scripts/capacity.py --protocol paper   # Millidge et al.'s own protocol

Writes results/capacity.json and results/capacity.png and prints the README tables;
``--protocol paper`` (``capacity_paper.py``: every stored image cued, SSE <= 60, the
paper's corruptions, similarities and beta) writes results/hopfield_paper_protocol.json
for MNIST and Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from memory_core import SIMILARITIES, HopfieldConfig, UniversalHopfield
from memory_core.data import fashion_mnist, flatten, mnist, natural_patches
from memory_core.masks import bottom_half_unknown, pixel_mask_to_vector, random_known_pixels

DEFAULT = HopfieldConfig()
SIZES = (10, 50, 100, 500, 1000, 5000, 10000)
CORRUPTIONS = ("half", "quarter", "noise")
NOISE_STD = 0.5
MSE_OK = 0.005
BETA_GRID = tuple(round(10.0 ** (e / 2), 6) for e in range(-6, 9))  # 1e-3 ... 1e4, half decades
TUNE_TOLERANCE = 0.005  # the kept beta is within half a point of the best


def load_pool(name: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """All candidate patterns of a data set, in a fixed shuffled order, and their image shape."""
    if name == "fashion":
        images = fashion_mnist("train")[0]  # (60000, 1, 28, 28)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        return flatten(images[order]), (1, 28, 28)
    if name == "mnist":
        return flatten(mnist()[0]), (1, 28, 28)  # 5000, already in a fixed shuffled order
    patches = natural_patches(32)  # already shuffled with a fixed seed, near-copies dropped
    return flatten(patches), (3, 32, 32)


def make_cues(originals: torch.Tensor, kind: str, shape: tuple[int, int, int], seed: int):
    """Corrupted cues (C, D) and masks (C, D) | None from the originals (C, D)."""
    c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return originals + NOISE_STD * torch.randn(originals.shape, generator=gen), None
    if kind == "half":
        mask = pixel_mask_to_vector(bottom_half_unknown(h, w), c).expand(len(originals), -1)
    elif kind == "quarter":
        mask = pixel_mask_to_vector(random_known_pixels(len(originals), h, w, 0.25, generator=gen), c)
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return torch.where(mask, originals, torch.zeros(())), mask


def evaluate(
    memory: UniversalHopfield,
    judge: UniversalHopfield,
    stored: torch.Tensor,
    idx: torch.Tensor,
    cues: torch.Tensor,
    mask: torch.Tensor | None,
) -> tuple[float, float]:
    """(fraction correct, fraction with MSE < 0.005) of one-step retrievals."""
    out = memory.retrieve(cues, mask=mask)  # (C, D)
    nearest = judge.search(out, k=1)[1][:, 0]  # (C,) euclidean nearest stored pattern
    correct = (nearest == idx).float().mean().item()
    mse_ok = (((out - stored[idx]) ** 2).mean(dim=1) < MSE_OK).float().mean().item()
    return correct, mse_ok


def cue_sample(n: int, cues: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(cues, n)]


def tune_betas(pools, tune_n: int, n_cues: int, progress: bool) -> tuple[dict[str, float], list[dict]]:
    """Softest beta per similarity that loses no recall at N = tune_n (held-out cues)."""
    sweep = []
    jobs = [(s, b) for s in SIMILARITIES for b in BETA_GRID]
    bar = tqdm(total=len(jobs) * len(pools), desc="beta sweep", disable=not progress)
    for data_name, (pool, shape) in pools.items():
        stored = pool[:tune_n]
        judge = UniversalHopfield("euclidean", "max", device="cpu")
        judge.store(stored)
        idx = cue_sample(tune_n, n_cues, seed=10_000)  # not the evaluation's cues
        cues = {k: make_cues(stored[idx], k, shape, seed=20_000 + i) for i, k in enumerate(CORRUPTIONS)}
        for sim, beta in jobs:
            m = UniversalHopfield(sim, "softmax", beta=beta, device="cpu")
            m.store(stored)
            for kind, (cue, mask) in cues.items():
                correct, mse_ok = evaluate(m, judge, stored, idx, cue, mask)
                sweep.append(
                    dict(
                        dataset=data_name,
                        similarity=sim,
                        beta=beta,
                        corruption=kind,
                        correct=correct,
                        mse_ok=mse_ok,
                    )
                )
            bar.update()
    bar.close()
    chosen = {}
    for sim in SIMILARITIES:
        score = {
            b: sum(
                (r["correct"] + r["mse_ok"]) / 2 for r in sweep if r["similarity"] == sim and r["beta"] == b
            )
            for b in BETA_GRID
        }
        per_run = len(pools) * len(CORRUPTIONS)
        best = max(score.values())
        chosen[sim] = min(b for b in BETA_GRID if score[b] >= best - TUNE_TOLERANCE * per_run)
    return chosen, sweep


def configs(betas: dict[str, float]) -> list[tuple[str, str, float | None]]:
    """(similarity, separation, beta): softmax at the tuned beta and max for every
    similarity, then HopfieldConfig's defaults (labelled "default" in the tables)."""
    out = [
        (sim, sep, betas[sim] if sep == "softmax" else None)
        for sim in SIMILARITIES
        for sep in ("softmax", "max")
    ]
    return out + [(DEFAULT.similarity, "default", DEFAULT.beta)]


def label(sep: str, beta: float | None) -> str:
    if sep == "default":
        return f"**default** ({DEFAULT.separation} β={DEFAULT.beta:g})"
    return f"softmax β={beta:g}" if sep == "softmax" else "max"


def run(pools, sizes, n_cues: int, betas: dict[str, float], progress: bool) -> list[dict]:
    rows = []
    todo = configs(betas)
    total = len(pools) * len(sizes) * len(todo)
    bar = tqdm(total=total, desc="capacity", disable=not progress)
    for data_name, (pool, shape) in pools.items():
        for n in sizes:
            stored = pool[:n]
            judge = UniversalHopfield("euclidean", "max", device="cpu")
            judge.store(stored)
            idx = cue_sample(n, n_cues, seed=n)
            cues = {k: make_cues(stored[idx], k, shape, seed=100 * n + i) for i, k in enumerate(CORRUPTIONS)}
            for sim, sep, beta in todo:
                if sep == "default":
                    m = UniversalHopfield(device="cpu")  # HopfieldConfig's defaults
                else:
                    m = UniversalHopfield(sim, sep, beta=beta or 1.0, device="cpu")
                m.store(stored)
                t0 = time.perf_counter()
                for kind, (cue, mask) in cues.items():
                    correct, mse_ok = evaluate(m, judge, stored, idx, cue, mask)
                    rows.append(
                        dict(
                            dataset=data_name,
                            n=n,
                            similarity=sim,
                            separation=sep,
                            beta=beta,
                            corruption=kind,
                            cues=len(idx),
                            correct=correct,
                            mse_ok=mse_ok,
                        )
                    )
                bar.set_postfix(data=data_name, n=n, sim=sim, sep=sep, s=f"{time.perf_counter() - t0:.1f}")
                bar.update()
    bar.close()
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean of each config over data sets, corruptions and N: what the defaults are picked from."""
    configs = sorted({(r["similarity"], r["separation"], r["beta"]) for r in rows}, key=str)
    out = []
    for sim, sep, beta in configs:
        mine = [r for r in rows if (r["similarity"], r["separation"], r["beta"]) == (sim, sep, beta)]
        out.append(
            dict(
                similarity=sim,
                separation=sep,
                beta=beta,
                correct=sum(r["correct"] for r in mine) / len(mine),
                mse_ok=sum(r["mse_ok"] for r in mine) / len(mine),
            )
        )
    return sorted(out, key=lambda r: -(r["correct"] + r["mse_ok"]))


def markdown(rows: list[dict], sizes, betas: dict[str, float], summary: list[dict]) -> str:
    """The README tables: the largest N at a glance, the mean, then every N."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    top = max(sizes)
    cols = [(d, k) for d in datasets for k in CORRUPTIONS]
    lines = [
        f"**N = {top}**: % correct (in brackets % with MSE < {MSE_OK})",
        "",
        "| similarity | separation | " + " | ".join(f"{d} {k}" for d, k in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for sim, sep, beta in configs(betas):
        cells = []
        for d, k in cols:
            r = next(
                r
                for r in rows
                if (r["dataset"], r["corruption"], r["similarity"], r["separation"], r["n"])
                == (d, k, sim, sep, top)
            )
            cells.append(f"{100 * r['correct']:.1f} ({100 * r['mse_ok']:.1f})")
        lines.append(f"| {sim} | {label(sep, beta)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Mean over data sets, corruptions and N**",
        "",
        "| similarity | separation | correct | MSE ok |",
        "|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['similarity']} | {label(s['separation'], s['beta'])} | {100 * s['correct']:.1f} "
            f"| {100 * s['mse_ok']:.1f} |"
        )
    lines += ["", "<details><summary>Every N</summary>", ""]
    for data_name in dict.fromkeys(r["dataset"] for r in rows):
        for kind in CORRUPTIONS:
            lines += [
                f"**{data_name}, {kind}** (% correct, in brackets % with MSE < {MSE_OK})",
                "",
                "| similarity | separation | " + " | ".join(f"N={n}" for n in sizes) + " |",
                "|---|---|" + "---|" * len(sizes),
            ]
            for sim, sep, beta in configs(betas):
                cells = []
                for n in sizes:
                    r = next(
                        r
                        for r in rows
                        if (r["dataset"], r["corruption"], r["similarity"], r["separation"], r["n"])
                        == (data_name, kind, sim, sep, n)
                    )
                    cells.append(f"{100 * r['correct']:.0f} ({100 * r['mse_ok']:.0f})")
                lines.append(f"| {sim} | {label(sep, beta)} | " + " | ".join(cells) + " |")
            lines.append("")
    lines.append("</details>")
    return "\n".join(lines)


def plot(rows: list[dict], sizes, betas: dict[str, float], path: Path) -> None:
    """Fraction correct against N: one panel per data set and corruption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(
        len(datasets),
        len(CORRUPTIONS),
        figsize=(4.2 * len(CORRUPTIONS), 3.4 * len(datasets)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    colours = dict(zip(SIMILARITIES, plt.get_cmap("tab10").colors))
    for i, data_name in enumerate(datasets):
        for j, kind in enumerate(CORRUPTIONS):
            ax = axes[i][j]
            for sim, sep, beta in configs(betas):
                ys = [
                    next(
                        r["correct"]
                        for r in rows
                        if (r["dataset"], r["corruption"], r["similarity"], r["separation"], r["n"])
                        == (data_name, kind, sim, sep, n)
                    )
                    for n in sizes
                ]
                if sep == "default":
                    ax.plot(
                        sizes, ys, ":", color="black", lw=2, label=f"default: {sim} {label(sep, beta)[13:-1]}"
                    )
                else:
                    ax.plot(
                        sizes,
                        ys,
                        "-" if sep == "softmax" else "--",
                        color=colours[sim],
                        marker="o",
                        ms=3,
                        label=f"{sim} {label(sep, beta)}",
                    )
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"{data_name}: {kind}")
            if i == len(datasets) - 1:
                ax.set_xlabel("patterns stored N")
            if j == 0:
                ax.set_ylabel("fraction correctly retrieved")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(
        "Universal Hopfield capacity (one step; correct = nearest stored pattern is the original;\n"
        "curves at 1.0 overlap)"
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_paper_protocol(args) -> None:
    """``--protocol paper``: results/hopfield_paper_protocol.json and its tables."""
    import capacity_paper

    torch.set_num_threads(args.threads)
    t0 = time.time()
    pools = {"mnist": load_pool("mnist")[0].double(), "fashion": load_pool("fashion")[0][:5000].double()}
    only = None if args.paper_experiments is None else tuple(args.paper_experiments.split(","))
    rows = capacity_paper.experiments(pools, only)
    print(capacity_paper.markdown(rows))
    out = (
        args.out
        if args.out != Path("results/capacity.json")
        else Path("results/hopfield_paper_protocol.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(["scripts/capacity.py", *sys.argv[1:]]),
        "sse_ok": capacity_paper.SSE_OK,
        "mse_ok": capacity_paper.MSE_OK,
        "runs": capacity_paper.RUNS,
        "block": capacity_paper.BLOCK,
        "torch": torch.__version__,
        "threads": args.threads,
        "seconds": round(time.time() - t0, 1),
    }
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {out} in {time.time() - t0:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cues", type=int, default=200, help="corrupted cues per N (default 200)")
    parser.add_argument("--sizes", type=str, default=",".join(map(str, SIZES)))
    parser.add_argument("--datasets", type=str, default="fashion,patches")
    parser.add_argument("--quick", action="store_true", help="N <= 1000 and 50 cues: a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/capacity.json"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--tables", type=Path, help="print the tables of an earlier run's JSON and stop")
    parser.add_argument(
        "--protocol",
        choices=("project", "paper"),
        default="project",
        help="paper: Millidge et al.'s own protocol on MNIST and Fashion-MNIST (capacity_paper.py)",
    )
    parser.add_argument(
        "--paper-experiments",
        default=None,
        help="with --protocol paper: only these, comma-separated (similarity, plain_noise, separation, noise, mask)",
    )
    args = parser.parse_args()
    if args.protocol == "paper":
        run_paper_protocol(args)
        return
    if args.tables:
        done = json.loads(args.tables.read_text())
        print(markdown(done["results"], done["meta"]["sizes"], done["betas"], done["summary"]))
        return
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    n_cues = args.cues
    if args.quick:
        sizes, n_cues = [n for n in sizes if n <= 1000], min(n_cues, 50)
    progress = not args.no_progress
    t0 = time.time()
    pools = {name: load_pool(name) for name in args.datasets.split(",")}
    for name, (pool, _) in pools.items():
        if len(pool) < max(sizes):
            raise SystemExit(f"{name} has {len(pool)} patterns, fewer than N = {max(sizes)}")
    betas, sweep = tune_betas(pools, max(sizes), n_cues, progress)
    print(f"softmax beta per similarity (softest without loss at N={max(sizes)}):", betas)
    rows = run(pools, sizes, n_cues, betas, progress)
    summary = summarise(rows)
    table = markdown(rows, sizes, betas, summary)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        command=" ".join(["scripts/capacity.py", *sys.argv[1:]]),
        sizes=sizes,
        cues=n_cues,
        corruptions=dict(
            half="bottom half unknown (masked)",
            quarter="25% of pixels known (masked)",
            noise=f"gaussian std {NOISE_STD}, not clipped",
        ),
        mse_ok=MSE_OK,
        beta_grid=BETA_GRID,
        tune_n=max(sizes),
        torch=torch.__version__,
        threads=args.threads,
        machine=platform.machine(),
        seconds=round(time.time() - t0, 1),
    )
    args.out.write_text(
        json.dumps(dict(meta=meta, betas=betas, results=rows, summary=summary, beta_sweep=sweep), indent=1)
    )
    png = args.out.with_suffix(".png")
    plot(rows, sizes, betas, png)
    print(f"wrote {args.out} and {png} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
