"""The README's picture: what the demo memory does with a half-hidden and a noisy cue.

    .venv/bin/python scripts/readme_figure.py   # results/readme_completion.png and .json, a few seconds

The demo page's Fashion-MNIST memory (the first 500 test images, `UniversalHopfield()`
defaults); six of its pictures, each shown as stored, with its bottom half hidden, completed,
with Gaussian noise (std 0.2), and retrieved from the noise. The JSON holds each answer's
MSE to the original and whether the nearest stored pattern is the original.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from memory_core import UniversalHopfield
from memory_core.data import FASHION_MNIST_CLASSES, fashion_mnist, flatten
from memory_core.masks import bottom_half_unknown

SHOWN = (0, 1, 2, 4, 6, 8)  # an ankle boot, a pullover, trousers, a shirt, a coat, a sandal
SCALE = 4  # pixels per Fashion-MNIST pixel in the picture
GAP = 6


def checker(h: int, w: int) -> np.ndarray:
    """(h, w) light-grey checkerboard in [0, 1]: what a hidden pixel looks like."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // 2) + (xx // 2)) % 2 == 0, 0.85, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/readme_completion.png"))
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = fashion_mnist("test", limit=500)  # (500, 1, 28, 28)
    patterns = flatten(images)  # (500, 784)
    memory = UniversalHopfield()
    memory.store(patterns)
    idx = torch.tensor(SHOWN)
    originals = patterns[idx]  # (6, 784)
    known = bottom_half_unknown(28, 28).flatten().expand(len(idx), -1)  # (6, 784) True = known
    completed = memory.retrieve(originals * known, mask=known)
    noisy = (
        originals + 0.2 * torch.randn(originals.shape, generator=torch.Generator().manual_seed(0))
    ).clamp(0, 1)
    retrieved = memory.retrieve(noisy)
    rows = []
    for name, out in (("completed", completed), ("retrieved", retrieved)):
        _, nearest = memory.search(out, k=1)
        for j, i in enumerate(SHOWN):
            rows.append(
                {
                    "image": i,
                    "class": FASHION_MNIST_CLASSES[int(labels[i])],
                    "cue": "bottom half hidden" if name == "completed" else "noise std 0.2",
                    "mse_to_original": float(((out[j] - originals[j]) ** 2).mean()),
                    "nearest_is_original": int(nearest[j, 0]) == i,
                }
            )
    # Columns: stored | half hidden | completed | noisy | retrieved; one row per picture.
    cols = [originals, None, completed, noisy, retrieved]
    tile = 28 * SCALE
    canvas = np.ones((len(SHOWN) * (tile + GAP) - GAP, len(cols) * (tile + GAP) - GAP))
    for r in range(len(SHOWN)):
        for c, col in enumerate(cols):
            if col is None:  # the cue: the known half, the hidden half as a checkerboard
                pic = originals[r].view(28, 28).numpy().copy()
                pic[14:] = checker(14, 28)
            else:
                pic = col[r].view(28, 28).numpy()
            big = np.kron(pic, np.ones((SCALE, SCALE)))
            y, x = r * (tile + GAP), c * (tile + GAP)
            canvas[y : y + tile, x : x + tile] = big
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((canvas * 255).round().astype(np.uint8), "L").save(args.out)
    summary = {
        "what": "UniversalHopfield() defaults on the first 500 Fashion-MNIST test images",
        "columns": ["stored", "bottom half hidden", "completed", "noisy (std 0.2)", "retrieved"],
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    worst = max(r["mse_to_original"] for r in rows)
    print(f"wrote {args.out} and .json: {len(rows)} answers, worst MSE to the original {worst:.2e}")


if __name__ == "__main__":
    main()
