"""The capacity protocol of Millidge et al.'s own code (UHN, ICML 2022), for ``capacity.py --protocol paper``.

What the paper's code does (its ``PC_retrieve_store_continuous`` and ``general_update_rule``),
and so what this reproduces, cue for cue:

- every one of the N stored images is cued, one retrieval step, correct when the sum of
  squared differences to the original is at most 60 (28x28 images, [0, 1] pixels: an
  MSE of 0.077, 15x the project's 0.005);
- noise: |x + N(0, sigma)| clipped to [0, 1] (sigma = 0.5 for the similarity figure);
  half: the bottom rows zeroed, no mask (the similarity sees the zeros);
- similarities as closeness: 1 / sum (x - q)^2 ("euclidean": squared), 1 / sum |x - q|
  ("manhattan"), and the L1-normalised dot (x / sum x) . (q / sum q) ("dot");
- its beta parameterisation: scores normalised to sum to 1 (so beta cancels), then the
  separation with its parameter (softmax(1000 s), s^n, one-hot max, log, identity), the
  weights normalised to sum to 1, output = weights @ stored;
- 5 runs on disjoint blocks of 1000 images, N in {2, 5, ..., 1000}.

Where the library has the same function (max, polynomial s^n, the normalised identity =
s^1), its ``UniversalHopfield`` output is computed too and the largest difference from
this reference is recorded (``library_max_abs_diff``): the library reproduces the paper
there. The paper's softmax on normalised scores, its log separation and its L1-normalised
dot are not library functions; the project's default (euclidean, softmax beta = 100, on
distances) is run on the same cues under the same criterion as another row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from memory_core import UniversalHopfield

SSE_OK = 60.0
MSE_OK = 0.005  # the project's criterion, reported beside the paper's
SIZES = (2, 5, 10, 20, 50, 100, 200, 300, 500, 700, 1000)
RUNS, BLOCK = 5, 1000
SIGMAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5)
MASK_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# The paper's separations: name -> (weights of the normalised scores s, library separation or None).
SEPARATIONS = {
    "max": None,
    "softmax (param 1000)": None,
    "identity (normalised)": ("normalised_identity", {}),
    "sqrt": ("polynomial", {"n": 0.5}),
    "square": ("polynomial", {"n": 2.0}),
    "cube": ("polynomial", {"n": 3.0}),
    "quartic": ("polynomial", {"n": 4.0}),
    "10th order polynomial": ("polynomial", {"n": 10.0}),
    "log": None,
}


def closeness(stored: Tensor, cues: Tensor, sim: str) -> Tensor:
    """(B, N) the paper's similarity scores (larger = closer), before its normalisation."""
    if sim == "euclidean":
        return 1.0 / torch.cdist(cues, stored).square().clamp_min(1e-300)
    if sim == "manhattan":
        return 1.0 / torch.cdist(cues, stored, p=1).clamp_min(1e-300)
    if sim == "dot":
        return (cues / cues.sum(1, keepdim=True)) @ (stored / stored.sum(1, keepdim=True)).T
    raise ValueError(sim)


def paper_weights(scores: Tensor, separation: str) -> Tensor:
    """(B, N) weights: normalise, separate, normalise again (``use_norm=True``)."""
    s = scores / scores.sum(1, keepdim=True)
    if separation == "max":
        w = torch.zeros_like(s).scatter_(1, s.argmax(1, keepdim=True), 1.0)
    elif separation.startswith("softmax"):
        w = torch.softmax(1000.0 * s, dim=1)
    elif separation == "log":
        w = torch.log(s)
    else:
        w = s.pow(SEPARATIONS[separation][1].get("n", 1.0))
    return w / w.sum(1, keepdim=True)


def corrupt(x: Tensor, kind: str, level: float, gen: torch.Generator) -> Tensor:
    """The paper's corruptions of (B, 784) images: ``noise`` (sigma = level) or ``mask``
    (the bottom ``level`` of the rows zeroed; level 0.5 = its halved images); ``plain
    noise`` is zero-mean and unclipped, for contrast (the paper's |x + n| clipped to
    [0, 1] lifts a black background to a mean of about 0.4)."""
    if kind == "noise":
        return (x + level * torch.randn(x.shape, generator=gen, dtype=x.dtype)).abs().clamp(0.0, 1.0)
    if kind == "plain noise":  # not the paper's: zero-mean, unclipped (the project's protocol)
        return x + level * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    rows = x.reshape(-1, 28, 28).clone()
    rows[:, int(28 * (1 - level)) :, :] = 0.0
    return rows.reshape(x.shape)


def library_output(stored: Tensor, cues: Tensor, sim: str, separation: str) -> Tensor | None:
    """The library's output for the same rule, where it has one (else None)."""
    if sim == "dot" or (separation != "max" and SEPARATIONS[separation] is None):
        return None
    name, params = ("max", {}) if separation == "max" else SEPARATIONS[separation]
    if sim == "euclidean" and name != "max":
        # the paper's euclidean closeness is 1 / d^2, the library's polynomial weighs 1 / d
        name, params = "polynomial", {"n": 2 * params.get("n", 1.0)}
    memory = UniversalHopfield(sim, name, device="cpu", dtype=torch.float64, **params)
    memory.store(stored)
    return memory.retrieve(cues)


def project_default(stored: Tensor, cues: Tensor) -> Tensor:
    """``UniversalHopfield()``: the library's defaults (euclidean, softmax beta = 100)."""
    memory = UniversalHopfield(device="cpu", dtype=torch.float64)
    memory.store(stored)
    return memory.retrieve(cues)


def score(out: Tensor, originals: Tensor) -> dict:
    """Fractions of cues whose output is within the paper's SSE of 60 of the original
    (``correct``) and within the project's MSE of 0.005 (``mse_ok``: SSE 3.9 on 784 pixels)."""
    sq = (out - originals).square()
    return {
        "correct": float((sq.sum(1) <= SSE_OK).double().mean()),
        "mse_ok": float((sq.mean(1) < MSE_OK).double().mean()),
    }


def run_cell(block: Tensor, n: int, sim: str, separation: str, kind: str, level: float, seed: int) -> dict:
    """One (N, similarity, separation, corruption) cell of one run: every stored image cued."""
    stored = block[:n]
    cues = corrupt(stored, kind, level, torch.Generator().manual_seed(seed))
    out = paper_weights(closeness(stored, cues, sim), separation) @ stored
    row = score(out, stored)
    lib = library_output(stored, cues, sim, separation)
    if lib is not None:
        row["library_max_abs_diff"] = float((lib - out).abs().max())
    return row


def experiments(pools: dict[str, Tensor], only: tuple[str, ...] | None = None) -> list[dict]:
    """The paper's four capacity experiments on each data set, 5 runs each.

    - similarity: N in SIZES, noise sigma 0.5, max separation, three similarities (and
      the same with zero-mean unclipped noise, which is not the paper's, for contrast);
    - separation: N in SIZES, halved images, manhattan, the nine separations;
    - noise: N = 100, sigma in SIGMAS, max separation;
    - mask: N = 50, a fraction of the rows zeroed, max separation.
    The project's default runs on every similarity / noise / mask cell's cues as a row too.
    ``only``: run just these experiments (their names above; "plain_noise" the contrast)."""
    from tqdm.auto import tqdm

    jobs = []
    for data in pools:
        for run in range(RUNS):
            jobs += [
                (data, run, "similarity", n, sim, "max", "noise", 0.5)
                for n in SIZES
                for sim in ("euclidean", "manhattan", "dot")
            ]
            jobs += [
                (data, run, "plain_noise", n, sim, "max", "plain noise", 0.5)
                for n in SIZES
                for sim in ("euclidean", "manhattan", "dot")
            ]
            jobs += [
                (data, run, "separation", n, "manhattan", sep, "mask", 0.5)
                for n in SIZES
                for sep in SEPARATIONS
            ]
            jobs += [
                (data, run, "noise", 100, sim, "max", "noise", s)
                for s in SIGMAS
                for sim in ("euclidean", "manhattan", "dot")
            ]
            jobs += [
                (data, run, "mask", 50, sim, "max", "mask", f)
                for f in MASK_FRACTIONS
                for sim in ("euclidean", "manhattan", "dot")
            ]
    jobs = [j for j in jobs if only is None or j[2] in only]
    rows = []
    for data, run, experiment, n, sim, sep, kind, level in tqdm(jobs, desc="paper protocol", unit="cell"):
        block = pools[data][run * BLOCK : (run + 1) * BLOCK]
        seed = run * 1_000_003 + n * 101 + int(level * 1000)  # the same cues for every config of a cell
        row = run_cell(block, n, sim, sep, kind, level, seed)
        rows.append(
            {
                "dataset": data,
                "run": run,
                "experiment": experiment,
                "n": n,
                "similarity": sim,
                "separation": sep,
                "corruption": kind,
                "level": level,
            }
            | row
        )
        if (
            sim == "euclidean" and sep == "max" and experiment != "separation"
        ):  # the project's default, same cues
            stored = block[:n]
            cues = corrupt(stored, kind, level, torch.Generator().manual_seed(seed))
            rows.append(
                {
                    "dataset": data,
                    "run": run,
                    "experiment": experiment,
                    "n": n,
                    "similarity": "euclidean",
                    "separation": "project default (softmax beta 100)",
                    "corruption": kind,
                    "level": level,
                }
                | score(project_default(stored, cues), stored)
            )
    return rows


def mean_table(rows: list[dict], experiment: str, x_key: str, key: str = "correct") -> str:
    """Markdown: mean (and spread over runs) of ``key`` per data set, config and x."""
    mine = [r for r in rows if r["experiment"] == experiment]
    xs = sorted({r[x_key] for r in mine})
    configs = list(dict.fromkeys((r["dataset"], r["similarity"], r["separation"]) for r in mine))
    lines = [
        f"| data | similarity | separation | {' | '.join(f'{x_key}={x:g}' for x in xs)} |",
        "|---|---|---|" + "---|" * len(xs),
    ]
    for data, sim, sep in configs:
        cells = []
        for x in xs:
            vals = [
                r[key]
                for r in mine
                if (r["dataset"], r["similarity"], r["separation"], r[x_key]) == (data, sim, sep, x)
            ]
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
            cells.append(f"{100 * mean:.0f}" + (f"±{100 * sd:.0f}" if sd >= 0.005 else ""))
        lines.append(f"| {data} | {sim} | {sep} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    parts = []
    for experiment, x_key, title in (
        ("similarity", "n", "Capacity by similarity (noise |x + N(0, 0.5)| clipped, max separation)"),
        (
            "plain_noise",
            "n",
            "The same with zero-mean noise of std 0.5, not clipped (not the paper's)",
        ),
        ("separation", "n", "Capacity by separation (manhattan, bottom half zeroed)"),
        ("noise", "level", "Noise level (N = 100, max separation; level = sigma)"),
        ("mask", "level", "Fraction of rows zeroed (N = 50, max separation)"),
    ):
        if not any(r["experiment"] == experiment for r in rows):
            continue
        parts += [
            f"**{title}**: % correct (SSE <= {SSE_OK:g}), mean ± sd over {RUNS} runs",
            "",
            mean_table(rows, experiment, x_key),
            "",
            f"The same cells, % within the project's MSE < {MSE_OK} of the original:",
            "",
            mean_table(rows, experiment, x_key, "mse_ok"),
            "",
        ]
    diffs = [r["library_max_abs_diff"] for r in rows if "library_max_abs_diff" in r]
    if diffs:
        parts.append(
            f"Library against this reference where both have the rule: {len(diffs)} cells, "
            f"largest output difference {max(diffs):.2g}."
        )
    return "\n".join(parts)
