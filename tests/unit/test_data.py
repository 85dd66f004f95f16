"""Offline data sets, image <-> tensor helpers and masks."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from memory_core import data
from memory_core.images import (
    ImageError,
    ImageTooLarge,
    alpha_mask,
    decode_image,
    decode_mask,
    fit_to_shape,
    mask_to_png,
    open_image,
    tensor_to_png,
)
from memory_core.masks import bottom_half_unknown, box_unknown, pixel_mask_to_vector, random_known_pixels


# --- data sets ----------------------------------------------------------------------------
def test_fashion_mnist_train_and_test():
    x, y = data.fashion_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))  # balanced test set
    xt, yt = data.fashion_mnist("train", limit=5)
    assert xt.shape == (5, 1, 28, 28) and yt.tolist() == [9, 0, 0, 3, 0]  # file order
    with pytest.raises(ValueError, match="split"):
        data.fashion_mnist("validation")


def test_missing_data_set_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path)
    data._fashion_mnist_arrays.cache_clear()
    try:
        with pytest.raises(data.DatasetUnavailable, match="dataset-fashion-mnist"):
            data.fashion_mnist()
    finally:
        data._fashion_mnist_arrays.cache_clear()


def test_digits():
    x, y = data.digits()
    assert x.shape == (1797, 1, 8, 8) and float(x.max()) == 1.0 and set(y.tolist()) == set(range(10))


@pytest.mark.parametrize("size,at_least", [(32, 10_000), (64, 3_000)])
def test_natural_patches_deterministic_distinct_textured(size, at_least):
    patches = data.natural_patches(size)
    assert patches.shape[1:] == (3, size, size) and patches.shape[0] >= at_least
    assert torch.equal(data.natural_patches(size, count=50), patches[:50])  # same order every time
    flat = data.flatten(patches[:2000])
    assert (flat.std(dim=1) >= 0.039).all()  # flat patches were dropped
    # Distinct: no two of the first 2000 patches are near-copies (MSE >= 0.002).
    mse = torch.cdist(flat, flat).pow(2) / flat.shape[1]
    mse.fill_diagonal_(float("inf"))
    assert float(mse.min()) >= 0.002 - 1e-6
    assert torch.equal(torch.round(patches[:100] * 255) / 255, patches[:100])  # 8-bit values
    with pytest.raises(ValueError, match="only"):
        data.natural_patches(64, count=10**6)


def test_photos_are_the_bundled_colour_photos():
    photos = data.photos()
    assert set(photos) == set(data.PHOTO_NAMES)
    assert photos["astronaut"].shape == (3, 512, 512)


# --- images -------------------------------------------------------------------------------
def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_png_round_trip_is_exact_for_8_bit_values(fashion_images):
    img = fashion_images[0]  # (1, 28, 28), multiples of 1/255
    assert torch.equal(decode_image(tensor_to_png(img)), img)
    rgb = data.natural_patches(32, count=1)[0]
    assert torch.equal(decode_image(tensor_to_png(rgb)), rgb)


def test_jpeg_decodes_and_channels_convert():
    rgb = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    x = decode_image(buf.getvalue())
    assert x.shape == (3, 40, 30)
    assert decode_image(buf.getvalue(), channels=1).shape == (1, 40, 30)
    grey = _png(np.zeros((5, 5), np.uint8))
    assert decode_image(grey).shape == (1, 5, 5) and decode_image(grey, channels=3).shape == (3, 5, 5)


def test_fit_to_shape_centre_crops_then_resizes():
    # A 60x20 (wide) picture: red left/right thirds, green centre third. Fitting it to a
    # square keeps only the centre 20x20, which is all green.
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20, 0] = arr[:, 40:, 0] = 255
    arr[:, 20:40, 1] = 255
    x = fit_to_shape(Image.fromarray(arr), (3, 10, 10))
    assert x.shape == (3, 10, 10)
    assert float(x[1].min()) > 0.95 and float(x[0].max()) < 0.05


def test_masks_from_pictures_and_alpha():
    grey = np.full((8, 8), 255, np.uint8)
    grey[4:] = 0  # bottom half black = to be filled
    mask = decode_mask(_png(grey), (8, 8))
    assert torch.equal(mask, bottom_half_unknown(8, 8))
    rgba = np.full((8, 8, 4), 200, np.uint8)
    rgba[2:4, 2:6, 3] = 0
    img = open_image(_png(rgba, "RGBA"))
    assert torch.equal(alpha_mask(img), box_unknown(8, 8, 2, 2, 2, 4))
    assert torch.equal(decode_mask(_png(rgba, "RGBA"), (8, 8)), box_unknown(8, 8, 2, 2, 2, 4))
    assert alpha_mask(open_image(_png(grey))) is None
    # A mask of another size is fitted like a cue, staying sharp.
    assert torch.equal(decode_mask(_png(np.kron(grey, np.ones((4, 4), np.uint8))), (8, 8)), mask)
    assert torch.equal(decode_mask(mask_to_png(mask), (8, 8)), mask)


def _png_bomb(width: int, height: int) -> bytes:
    """A small PNG file whose header claims width x height (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows of zeros
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bombs_and_garbage_are_refused():
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(_png_bomb(50_000, 50_000))  # refused from the header, instantly
    with pytest.raises(ImageTooLarge):
        decode_image(_png(np.zeros((100, 100), np.uint8)), max_pixels=5000)
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(b"this is not an image")
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageError, match="corrupt"):
        decode_image(_png(np.zeros((64, 64), np.uint8))[:60])  # truncated


# --- masks --------------------------------------------------------------------------------
def test_pixel_masks_spread_over_channels():
    m = bottom_half_unknown(4, 4)
    v = pixel_mask_to_vector(m, 3)
    assert v.shape == (48,) and torch.equal(v.reshape(3, 4, 4), m.expand(3, 4, 4))
    r = random_known_pixels(5, 32, 32, 0.25, torch.Generator().manual_seed(0))
    assert r.shape == (5, 32, 32) and (r.sum(dim=(1, 2)) == 256).all()
    assert pixel_mask_to_vector(r, 3).shape == (5, 3072)
