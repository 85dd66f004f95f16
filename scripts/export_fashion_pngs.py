"""Write a few Fashion-MNIST images as PNG files, for trying the service with curl.

    .venv/bin/python scripts/export_fashion_pngs.py [--out samples] [--count 5]

Writes, for i < count: f{i}.png (the image), f{i}-top.png (bottom half blacked out),
f{i}-noisy.png (Gaussian noise, std 0.2), f{i}-alpha.png (bottom half transparent:
alpha 0 = unknown); and top-half-mask.png (white = known, black = to fill).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from memory_core.data import fashion_mnist
from memory_core.images import mask_to_png, tensor_to_png
from memory_core.masks import bottom_half_unknown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--count", type=int, default=5)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images, _ = fashion_mnist("train", limit=args.count)
    known = bottom_half_unknown(28, 28)  # (28, 28) True = known
    gen = torch.Generator().manual_seed(0)
    for i, img in enumerate(images):  # img: (1, 28, 28)
        (args.out / f"f{i}.png").write_bytes(tensor_to_png(img))
        (args.out / f"f{i}-top.png").write_bytes(tensor_to_png(img * known))
        noisy = (img + 0.2 * torch.randn(img.shape, generator=gen)).clamp(0, 1)
        (args.out / f"f{i}-noisy.png").write_bytes(tensor_to_png(noisy))
        grey = (img[0] * 255).round().to(torch.uint8).numpy()
        alpha = known.numpy().astype(np.uint8) * 255
        buf = io.BytesIO()
        Image.fromarray(np.stack([grey, alpha], axis=2), "LA").save(buf, format="PNG")
        (args.out / f"f{i}-alpha.png").write_bytes(buf.getvalue())
    (args.out / "top-half-mask.png").write_bytes(mask_to_png(known))
    print(f"wrote {4 * args.count + 1} PNG files to {args.out}/")


if __name__ == "__main__":
    main()
