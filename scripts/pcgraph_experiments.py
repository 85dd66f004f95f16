"""PC graphs on Fashion-MNIST: one trained graph, several tasks, two topologies side by side.

Each graph has 784 image vertices + 10 label vertices (the sensory vertices: a pattern is
[image ; one-hot label]) + hidden vertices, and is trained once by inference learning with
every sensory vertex clamped. Then, on held-out test images, by clamping different vertices:

- classification: clamp the image, read the label vertices (argmax);
- completion: clamp the top half of the image (the label is unknown too), infer the
  bottom half; MSE on the inferred pixels;
- denoising: nothing clamped, relax from image + N(0, 0.2^2) noise; MSE to the clean image;
- generation: clamp a one-hot label, infer the image; counted as a hit when the image is
  nearest (Euclidean) to the mean training image of its own class.

Topologies: "fully connected" (every vertex predicts every other one) and two generative
hierarchies: "label on top" (label -> hidden 2 -> hidden 1 -> image) and "label beside the
image" (hidden 2 -> hidden 1 -> [image ; label], the PC-memory layout).
Closed-form references on the same data: the mean image, ridge regression from the top
half to the bottom half, and a ridge-regression linear classifier.

Writes results/pcgraph.json and results/pcgraph_samples.png and prints a Markdown table.

    .venv/bin/python scripts/pcgraph_experiments.py            # the README table
    .venv/bin/python scripts/pcgraph_experiments.py --quick    # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from memory_core.data import fashion_mnist, flatten
from memory_core.pcgraph import PCGraph, hierarchy

PIXELS, CLASSES = 784, 10
DIM = PIXELS + CLASSES
HALF = PIXELS // 2  # the top 14 rows


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=10000, help="training images (first N of the train split)")
    p.add_argument("--test", type=int, default=1000, help="test images (first N of the test split)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=256, help="hidden vertices of the fully connected graph")
    p.add_argument(
        "--layers", type=str, default="256,64", help="hidden layer sizes of the hierarchical graph"
    )
    p.add_argument("--recall-steps", type=int, default=200, help="inference steps at test time")
    p.add_argument("--noise", type=float, default=0.2, help="std of the denoising noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest on a shared 2-core machine (OpenMP hand-offs "
        "between busy cores cost more than they give at these sizes)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("results/pcgraph.json"))
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    args = p.parse_args()
    if args.quick:
        args.train, args.test, args.epochs, args.recall_steps = 500, 100, 1, 20
        args.hidden, args.layers = 32, "32,8"
        args.out = args.out.with_name(args.out.stem + "_quick.json")
    return args


def patterns(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28), (N,) -> (N, 794) = [image ; one-hot label]."""
    return torch.cat([flatten(images), F.one_hot(labels, CLASSES).float()], dim=1)


def chunked(
    graph: PCGraph, cue: torch.Tensor, mask: torch.Tensor | None, steps: int, desc: str
) -> torch.Tensor:
    """graph.retrieve over chunks of 250, with a progress bar."""
    outs = []
    for start in tqdm(range(0, len(cue), 250), desc=desc, leave=False):
        m = None if mask is None else mask[start : start + 250]
        outs.append(graph.retrieve(cue[start : start + 250], m, steps=steps))
    return torch.cat(outs)


def evaluate(
    graph: PCGraph,
    test: torch.Tensor,
    labels: torch.Tensor,
    class_means: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[dict, dict]:
    """The four tasks; returns (metrics, a few outputs for the picture)."""
    n, steps = len(test), args.recall_steps
    image_known = torch.zeros(n, DIM, dtype=torch.bool)
    image_known[:, :PIXELS] = True
    top_known = torch.zeros(n, DIM, dtype=torch.bool)
    top_known[:, :HALF] = True
    gen = torch.Generator().manual_seed(args.seed)
    noisy = test.clone()
    noisy[:, :PIXELS] += args.noise * torch.randn(n, PIXELS, generator=gen)
    noisy[:, PIXELS:] = 0.0  # the label is not given either

    t0 = time.perf_counter()
    classified = chunked(graph, test, image_known, steps, "classify")
    completed = chunked(graph, test, top_known, steps, "complete")
    denoised = chunked(graph, noisy, None, steps, "denoise")
    label_cue = torch.cat([torch.zeros(CLASSES, PIXELS), torch.eye(CLASSES)], dim=1)
    generated = graph.retrieve(label_cue, ~image_known[:CLASSES], steps=steps)[:, :PIXELS]
    recall_s = time.perf_counter() - t0

    bottom = slice(HALF, PIXELS)
    metrics = {
        "accuracy": float((classified[:, PIXELS:].argmax(1) == labels).float().mean()),
        "completion_mse": float(((completed[:, bottom] - test[:, bottom]) ** 2).mean()),
        "denoising_mse": float(((denoised[:, :PIXELS] - test[:, :PIXELS]) ** 2).mean()),
        "noisy_mse": float(((noisy[:, :PIXELS] - test[:, :PIXELS]) ** 2).mean()),
        "generation_hits": int(
            (torch.cdist(generated, class_means).argmin(1) == torch.arange(CLASSES)).sum()
        ),
        "test_energy": float(graph.energy(test[:250], steps=steps).mean()),
        "recall_seconds": recall_s,
    }
    samples = {
        "completed": completed[:8, :PIXELS],
        "denoised": denoised[:8, :PIXELS],
        "noisy": noisy[:8, :PIXELS],
        "generated": generated,
    }
    return metrics, samples


def references(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor) -> dict:
    """Closed-form baselines on the same images: mean image, ridge completion, ridge classifier."""
    x, xt = train[:, :PIXELS].double(), test[:, :PIXELS].double()
    ones, ones_t = torch.ones(len(x), 1, dtype=torch.float64), torch.ones(len(xt), 1, dtype=torch.float64)

    def ridge(inputs: torch.Tensor, targets: torch.Tensor, lam: float = 10.0) -> torch.Tensor:
        a = torch.cat([inputs, ones], 1)
        return torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1], dtype=torch.float64), a.T @ targets)

    w_fill = ridge(x[:, :HALF], x[:, HALF:])
    fill = torch.cat([xt[:, :HALF], ones_t], 1) @ w_fill
    w_cls = ridge(x, F.one_hot(train_y, CLASSES).double())
    scores = torch.cat([xt, ones_t], 1) @ w_cls
    return {
        "mean_image_completion_mse": float(((x[:, HALF:].mean(0) - xt[:, HALF:]) ** 2).mean()),
        "ridge_completion_mse": float(((fill - xt[:, HALF:]) ** 2).mean()),
        "ridge_classifier_accuracy": float((scores.argmax(1) == test_y).double().mean()),
    }


def save_picture(path: Path, test: torch.Tensor, samples: dict[str, dict]) -> None:
    """Rows per topology: 8 completions, 8 denoisings, 10 generated images (one per class)."""

    def row(images: torch.Tensor) -> np.ndarray:
        tiles = images.clamp(0, 1).reshape(-1, 28, 28).numpy()
        return np.concatenate(list(tiles), axis=1)

    cue = test[:8, :PIXELS].clone()
    cue[:, HALF:] = 0.0
    rows = [row(test[:8, :PIXELS]), row(cue)]
    for name in samples:
        rows += [
            row(samples[name]["completed"]),
            row(samples[name]["noisy"]),
            row(samples[name]["denoised"]),
            row(samples[name]["generated"]),
        ]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]))) for r in rows]
    Image.fromarray((np.concatenate(rows) * 255).astype(np.uint8)).save(path)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    train_images, train_y = fashion_mnist("train", limit=args.train)
    test_images, test_y = fashion_mnist("test", limit=args.test)
    train, test = patterns(train_images, train_y), patterns(test_images, test_y)
    class_means = torch.stack([train[train_y == c, :PIXELS].mean(0) for c in range(CLASSES)])

    layers = tuple(int(s) for s in args.layers.split(","))
    n = DIM + sum(layers)
    # label -> top hidden -> ... -> first hidden -> image; vertices [image | label | hidden...]
    starts = np.cumsum([DIM, *layers]).tolist()
    hidden_groups = [range(lo, hi) for lo, hi in itertools.pairwise(starts)]
    label_on_top = hierarchy(n, [range(PIXELS), *hidden_groups, range(PIXELS, DIM)])
    setups = {
        "fully connected": dict(hidden=args.hidden, topology="fully_connected"),
        "hierarchical, label on top": dict(hidden=layers, topology="custom", adjacency=label_on_top),
        "hierarchical, label beside the image": dict(hidden=layers, topology="layered"),
    }
    results, samples = {}, {}
    for name, setup in setups.items():
        graph = PCGraph(DIM, **setup, seed=args.seed, device=args.device)
        print(f"{name}: {graph}")
        t0 = time.perf_counter()
        history = graph.fit(train, epochs=args.epochs, progress=True)
        train_s = time.perf_counter() - t0
        metrics, samples[name] = evaluate(graph, test, test_y, class_means, args)
        results[name] = {
            "topology": setup["topology"],
            "hidden": setup["hidden"],
            "vertices": graph.n_vertices,
            "edges": int(graph.adjacency.sum()),
            "config": asdict(graph.config),
            "train_seconds": train_s,
            "final_train_energy": history[-1]["energy"],
            "history": history,
            **metrics,
        }
        print(json.dumps({k: v for k, v in results[name].items() if k != "history"}))

    refs = references(train, train_y, test, test_y)
    wall = time.perf_counter() - t_start
    out = {
        "command": " ".join(["python", *sys.argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results,
        "references": refs,
        "wall_seconds": wall,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": args.device,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    save_picture(args.out.with_name(args.out.stem + "_samples.png"), test, samples)

    print(
        f"\n{args.train} training / {args.test} test images, {args.epochs} epochs; wall time {wall / 60:.1f} min\n"
    )
    print(
        "| topology | vertices | edges | train | classification accuracy | completion MSE (bottom half) "
        f"| denoising MSE (cue {results['fully connected']['noisy_mse']:.4f}) | generation (nearest class mean) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['vertices']} | {r['edges']} | {r['train_seconds'] / 60:.1f} min | {r['accuracy']:.3f} "
            f"| {r['completion_mse']:.4f} | {r['denoising_mse']:.4f} | {r['generation_hits']}/10 |"
        )
    print(
        f"| mean image / ridge regression (reference) | | | | {refs['ridge_classifier_accuracy']:.3f} "
        f"| {refs['mean_image_completion_mse']:.4f} / {refs['ridge_completion_mse']:.4f} | | |"
    )


if __name__ == "__main__":
    main()
