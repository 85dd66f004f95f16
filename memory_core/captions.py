"""Image + caption pairs, offline: the bundled photos with written captions, and
Fashion-MNIST with per-class captions.

The captions live in ``memory_core/assets/*.json`` (written for this project, CC0; the
licence note is in the files). Each pair also carries a paraphrase: the same content in
other words, for testing lookup with queries that do not copy the stored caption.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from .data import DatasetUnavailable, fashion_mnist

__all__ = ["CaptionedImages", "caption_photo", "fashion_caption_pairs", "photo_caption_pairs"]


@dataclass(frozen=True)
class CaptionedImages:
    """Images with one caption each.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1].
        captions: N stored captions.
        paraphrases: N reworded queries, one per image.
        ids: N names (unique).
        labels: (N,) class index for Fashion-MNIST pairs (captions are per class), else None.
    """

    images: Tensor
    captions: list[str]
    paraphrases: list[str]
    ids: list[str]
    labels: Tensor | None = None

    def __len__(self) -> int:
        return len(self.captions)


def _asset(name: str) -> dict:
    return json.loads(resources.files("memory_core").joinpath("assets", name).read_text(encoding="utf-8"))


@lru_cache(maxsize=32)
def caption_photo(name: str) -> np.ndarray:
    """One photo bundled with scikit-image as (H, W, 3) uint8 RGB (grey ones made RGB,
    transparency composited on white)."""
    from PIL import Image

    try:
        import skimage.data as skd
    except ImportError as exc:
        raise DatasetUnavailable("captioned photos need scikit-image: pip install scikit-image") from exc
    if name.startswith("motorcycle_"):
        left, right, _ = skd.stereo_motorcycle()
        arr = left if name == "motorcycle_left" else right
    else:
        arr = np.asarray(getattr(skd, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:  # float images (the phantom) span [0, max]
        arr = np.clip(arr / max(float(arr.max()), 1e-12) * 255.0, 0, 255).round().astype(np.uint8)
    img = Image.fromarray(arr)
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img)
        img = background
    return np.asarray(img.convert("RGB"))


def photo_caption_pairs(size: int = 64) -> CaptionedImages:
    """The captioned photo crops (69 pairs), each resized to (3, size, size).

    Crops are square boxes of the source photo, resized with a box filter and
    quantised to 8 bits, so the same arguments give the same pixels everywhere.
    """
    from PIL import Image

    pairs = _asset("photo_captions.json")["pairs"]
    images = []
    for pair in pairs:
        left, top, side = pair["box"]
        crop = Image.fromarray(caption_photo(pair["photo"])).crop((left, top, left + side, top + side))
        arr = np.asarray(crop.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()))
    return CaptionedImages(
        images=torch.stack(images),
        captions=[p["caption"] for p in pairs],
        paraphrases=[p["paraphrase"] for p in pairs],
        ids=[p["id"] for p in pairs],
    )


def fashion_caption_pairs(per_class: int = 10, split: str = "test") -> CaptionedImages:
    """Fashion-MNIST images with their class's caption: the first ``per_class`` of each
    class in file order, classes interleaved (0, 1, ..., 9, 0, 1, ...).

    Captions are per class (ten distinct captions), so lookups are scored by class.
    """
    classes = _asset("fashion_captions.json")["classes"]
    images, labels = fashion_mnist(split)
    picks = [torch.nonzero(labels == c).squeeze(1)[:per_class] for c in range(10)]
    order = torch.stack(picks, dim=1).reshape(-1)  # (10 * per_class,) interleaved by class
    chosen = labels[order]
    return CaptionedImages(
        images=images[order].clone(),
        captions=[classes[int(c)]["caption"] for c in chosen],
        paraphrases=[classes[int(c)]["paraphrase"] for c in chosen],
        ids=[f"fashion-{split}-{int(i)}" for i in order],
        labels=chosen.clone(),
    )
