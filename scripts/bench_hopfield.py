"""Search and retrieval speed of UniversalHopfield against faiss-cpu IndexFlat, side by side.

For N in {10k, 100k} stored patterns, D in {784 (Fashion-MNIST), 3072 (natural 32x32
colour patches)} and query batches of 1 and 256, on the same data in the same process:

    metric  faiss baseline                  ours
    L2      IndexFlatL2.search(k=1)         UniversalHopfield("euclidean")
    IP      IndexFlatIP.search(k=1)         UniversalHopfield("dot")
    L1      IndexFlat(METRIC_L1).search     UniversalHopfield("manhattan")

and for each, ours: ``search(k=1)`` and softmax ``retrieve`` at the capacity-tuned beta
(sharp: most weights underflow to 0) and at beta = 1e-6 (every weight non-zero: the
dense worst case). Each repetition times every candidate once, in a rotating order,
and each ratio (ours / faiss) is taken within the repetition, so that load from other
processes on a shared machine hits both sides alike; the table gives median ratios.
Targets: search within 1.25x of faiss for L2 and IP, no slower for L1; retrieval within
2.5x of faiss search.

Data: Fashion-MNIST has 70 000 images (train + test); past that its mirror images are
added. There are about 13 000 distinct natural patches; past that their 7 other
rotations/reflections are added (real image statistics, distinct patterns, but not
independent ones). Cues are stored patterns plus Gaussian noise of std 0.1.

    .venv/bin/python scripts/bench_hopfield.py             # the full grid (~15 min on 2 busy cores)
    .venv/bin/python scripts/bench_hopfield.py --sizes 10000 --reps 5
    .venv/bin/python scripts/bench_hopfield.py --tables run1.json run2.json   # cells "run 1 / run 2"
    .venv/bin/python scripts/bench_hopfield.py --metrics L1 --tables run1.json run2.json  # L1 rows only

Writes results/bench_hopfield.json and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import faiss
import torch
from tqdm import tqdm

from memory_core import UniversalHopfield, make_separation
from memory_core.data import fashion_mnist, flatten, natural_patches
from memory_core.kernels import kernel_info

METRICS = {  # metric -> (our similarity, faiss index factory)
    "L2": ("euclidean", lambda d: faiss.IndexFlatL2(d)),
    "IP": ("dot", lambda d: faiss.IndexFlatIP(d)),
    "L1": ("manhattan", lambda d: faiss.IndexFlat(d, faiss.METRIC_L1)),
}
# Softmax betas from scripts/capacity.py: the tuned ones (softest without loss at N = 10 000),
# and for euclidean the default (HopfieldConfig.beta).
SHARP_BETA = {"euclidean": 100.0, "dot": 0.1, "manhattan": 1.0}
DENSE_BETA = 1e-6  # every weight exp(beta * s - max) is non-zero: the dense matmul path
TARGETS = {"search": {"L2": 1.25, "IP": 1.25, "L1": 1.0}, "retrieve": 2.5}


def load_patterns(dim: int, n: int) -> tuple[torch.Tensor, str]:
    """n distinct patterns of dimension 784 or 3072, and a note on where they come from."""
    if dim == 784:
        real = torch.cat([flatten(fashion_mnist("train")[0]), flatten(fashion_mnist("test")[0])])
        if n <= len(real):
            return real[:n].contiguous(), f"{n} Fashion-MNIST images"
        mirrored = real.view(-1, 28, 28).flip(2).reshape(len(real), -1)
        return torch.cat([real, mirrored[: n - len(real)]]), (
            f"{len(real)} Fashion-MNIST images + {n - len(real)} of their mirror images"
        )
    if dim == 3072:
        real = natural_patches(32)  # (P, 3, 32, 32)
        if n <= len(real):
            return flatten(real[:n]).contiguous(), f"{n} natural 32x32 patches"
        views = [real, real.flip(3)]
        for turns in (1, 2, 3):
            rotated = real.rot90(turns, dims=(2, 3))
            views += [rotated, rotated.flip(3)]
        pool = flatten(torch.cat(views))
        if n > len(pool):
            raise SystemExit(f"only {len(pool)} patches with their rotations/reflections; asked for {n}")
        return pool[:n].contiguous(), (
            f"{len(real)} natural 32x32 patches + {n - len(real)} of their rotations/reflections"
        )
    raise SystemExit(f"dimension {dim} has no data set here (784 or 3072)")


_FLUSH = torch.zeros(1 << 24)  # 64 MiB: more than the last-level cache


def time_interleaved(fns: dict[str, callable], min_reps: int, budget_s: float) -> dict[str, list[float]]:
    """Seconds per call of each candidate, repetition by repetition, in a rotating order.

    The cache is flushed before every call, so no candidate finds its data still cached
    from the one before (ours share one copy of the patterns, faiss holds its own)."""
    for fn in fns.values():  # warm-up: builds kernels, touches memory
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    start, rep = time.perf_counter(), 0
    while rep < min_reps or (time.perf_counter() - start < budget_s and rep < 50):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            _FLUSH.add_(1.0)
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
        rep += 1
    return times


def bench_one(patterns: torch.Tensor, batch: int, metric: str, min_reps: int, budget_s: float) -> dict:
    sim, factory = METRICS[metric]
    n, d = patterns.shape
    gen = torch.Generator().manual_seed(batch)
    picks = torch.randint(0, n, (batch,), generator=gen)
    cues = (patterns[picks] + 0.1 * torch.randn(batch, d, generator=gen)).contiguous()  # (B, D)
    cues_np = cues.numpy()

    index = factory(d)
    index.add(patterns.numpy())
    memory = UniversalHopfield(sim, "softmax", beta=SHARP_BETA[sim], device="cpu")
    memory.store(patterns)
    # The same stored patterns with a soft separation (a shallow copy shares the buffers).
    dense = copy.copy(memory)
    dense.sep = make_separation("softmax", beta=DENSE_BETA)

    fns = {
        "faiss": lambda: index.search(cues_np, 1),
        "search": lambda: memory.search(cues, k=1),
        "retrieve": lambda: memory.retrieve(cues),
        "retrieve_dense": lambda: dense.retrieve(cues),
    }
    times = time_interleaved(fns, min_reps, budget_s)
    ratio = {
        k: statistics.median(t / f for t, f in zip(times[k], times["faiss"])) for k in fns if k != "faiss"
    }

    _, faiss_idx = index.search(cues_np, 1)
    _, our_idx = memory.search(cues, k=1)
    agree = float((torch.from_numpy(faiss_idx[:, 0]) == our_idx[:, 0]).float().mean())
    return dict(
        metric=metric,
        similarity=sim,
        n=n,
        dim=d,
        batch=batch,
        reps=len(times["faiss"]),
        median_s={k: statistics.median(v) for k, v in times.items()},
        ratio=ratio,
        top1_agreement=agree,
    )


def table(runs: list[list[dict]]) -> str:
    """Markdown table of one run, or of several runs of the same cases (cells "a / b")."""
    head = (
        "| N | D | batch | metric | faiss search ms | search ratio | retrieve ratio (sharp β) "
        "| retrieve ratio (dense) | top-1 = faiss |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]

    def cell(values: list[float], target: float, fmt: str = "{:.2f}") -> str:
        text = " / ".join(fmt.format(v) for v in values)
        return text + (" ✗" if target is not None and max(values) > target else "")

    for case in zip(*runs):
        r = case[0]
        lines.append(
            f"| {r['n']} | {r['dim']} | {r['batch']} | {r['metric']} "
            f"| {cell([1000 * c['median_s']['faiss'] for c in case], None, '{:.0f}')} "
            f"| {cell([c['ratio']['search'] for c in case], TARGETS['search'][r['metric']])} "
            f"| {cell([c['ratio']['retrieve'] for c in case], TARGETS['retrieve'])} "
            f"| {cell([c['ratio']['retrieve_dense'] for c in case], TARGETS['retrieve'])} "
            f"| {cell([100 * c['top1_agreement'] for c in case], None, '{:.0f}%')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dims", default="784,3072")
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--metrics", default="L2,IP,L1")
    parser.add_argument("--threads", type=int, default=2, help="for torch and faiss alike (default 2)")
    parser.add_argument("--reps", type=int, default=5, help="minimum repetitions per case (default 5)")
    parser.add_argument("--budget", type=float, default=6.0, help="keep repeating a case up to this many s")
    parser.add_argument("--out", type=Path, default=Path("results/bench_hopfield.json"))
    parser.add_argument(
        "--tables", type=Path, nargs="+", help="print the table of earlier runs' JSON and stop"
    )
    args = parser.parse_args()
    if args.tables:  # the rows of --metrics only, so that a full run lines up with an L1-only one
        keep = set(args.metrics.split(","))
        print(
            table(
                [
                    [r for r in json.loads(p.read_text())["results"] if r["metric"] in keep]
                    for p in args.tables
                ]
            )
        )
        return
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(s) for s in args.dims.split(",")]
    batches = [int(s) for s in args.batches.split(",")]
    metrics = args.metrics.split(",")

    t0, load_before = time.time(), os.getloadavg()
    rows, notes = [], {}
    cases = [(d, n, b, m) for d in dims for n in sizes for b in batches for m in metrics]
    bar = tqdm(cases, desc="bench")
    patterns, loaded = None, None
    for d, n, b, m in bar:
        if loaded != (d, n):
            patterns = None  # free the previous set first
            patterns, notes[f"{n}x{d}"] = load_patterns(d, n)
            loaded = (d, n)
        bar.set_postfix(N=n, D=d, B=b, metric=m)
        rows.append(bench_one(patterns, b, m, args.reps, args.budget))
    print()
    print(table([rows]))
    meta = dict(
        command="scripts/bench_hopfield.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        threads=args.threads,
        torch=torch.__version__,
        faiss=faiss.__version__,
        faiss_simd=faiss.get_compile_options(),
        kernel=kernel_info(),
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        loadavg_before=load_before,
        loadavg_after=os.getloadavg(),
        seconds=round(time.time() - t0, 1),
        data=notes,
        sharp_beta=SHARP_BETA,
        dense_beta=DENSE_BETA,
        targets=TARGETS,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, results=rows), indent=1))
    print(
        f"wrote {args.out} in {time.time() - t0:.0f} s (load average before {load_before[0]:.1f}, "
        f"after {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
