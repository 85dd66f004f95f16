"""Image <-> tensor helpers (Pillow), with DESIGN.md's conventions.

- An image is float32 in [0, 1], shape (C, H, W), C = 1 (grey) or 3 (RGB).
- A mask is bool (H, W) or (C, H, W), True = known. As a picture: greyscale, white
  (>= 128) = known, black = to be filled; or an RGBA image whose alpha 0 marks the
  unknown pixels.
- A cue of another size than the memory's is centre-cropped to the memory's aspect
  ratio and resized to it.

Decoding opens PNG and JPEG only (``FORMATS``: what the service documents; Pillow's other
decoders, ICO, TIFF, BMP, ..., are never reached), reads the size from the header and
refuses images with more than ``max_pixels`` pixels before decompressing them
(decompression bombs), and any undecodable bytes, with ``ImageError``. A JPEG's EXIF
orientation is applied (a phone photo comes out the right way up).
"""

from __future__ import annotations

import io
import warnings
from struct import error as struct_error

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "ImageError",
    "ImageTooLarge",
    "alpha_mask",
    "decode_image",
    "decode_mask",
    "fit_to_shape",
    "image_to_tensor",
    "load_image",
    "mask_from_image",
    "mask_to_png",
    "open_image",
    "peek_image",
    "tensor_to_png",
]

DEFAULT_MAX_PIXELS = 16_000_000
FORMATS = ("PNG", "JPEG")
_ORIENTATION = 0x0112  # the EXIF tag


class ImageError(ValueError):
    """Bytes that are not a decodable PNG/JPEG image (or not one we accept)."""


class ImageTooLarge(ImageError):
    """An image with more pixels than allowed."""


def peek_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open image bytes lazily (the header only): a PNG or JPEG of at most ``max_pixels`` pixels.

    Returns:
        an unloaded PIL image, for ``load_image``; its ``size`` is the header's.
    """
    if not data:
        raise ImageError("empty image data")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)  # lazy: reads the header only
    except UnidentifiedImageError:
        raise ImageError(
            f"not a readable image: the bytes are no {' or '.join(FORMATS)} picture (the formats accepted)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # a corrupt header
        raise ImageError(f"corrupt image data: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    return img


def load_image(img: Image.Image) -> Image.Image:
    """Decode a ``peek_image`` result, EXIF orientation applied; ``ImageError`` for corrupt data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            if img.getexif().get(_ORIENTATION, 1) != 1:  # else exif_transpose would copy it all
                img = ImageOps.exif_transpose(img) or img
            return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
        KeyError,
        struct_error,
    ) as exc:  # truncated or corrupt
        raise ImageError(f"corrupt image data: {exc}") from None


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode image bytes (``peek_image`` then ``load_image``): a PNG or JPEG
    of at most ``max_pixels`` pixels, refused before decompressing otherwise.

    Returns:
        a loaded PIL image, the right way up.
    """
    return load_image(peek_image(data, max_pixels))


def image_to_tensor(img: Image.Image, channels: int | None = None) -> Tensor:
    """PIL image -> (C, H, W) float32 in [0, 1].

    Arguments:
        img: any mode; palette and alpha are dropped (alpha is for masks: ``alpha_mask``).
        channels: 1 (grey) or 3 (RGB); None keeps grey images grey and makes the rest RGB.
    """
    if channels is None:
        channels = 1 if img.mode in ("1", "L", "I", "I;16", "F") else 3
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    converted = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(converted, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    if channels == 1:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def decode_image(data: bytes, channels: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Image bytes -> (C, H, W) float32 in [0, 1]; see ``open_image`` and ``image_to_tensor``."""
    return image_to_tensor(open_image(data, max_pixels), channels)


def _centre_crop_box(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int, int, int]:
    """Largest centred box of the target's aspect ratio inside a width x height picture."""
    if width * target_h > height * target_w:  # too wide: crop the sides
        new_w = max(1, round(height * target_w / target_h))
        left = (width - new_w) // 2
        return left, 0, left + new_w, height
    new_h = max(1, round(width * target_h / target_w))
    top = (height - new_h) // 2
    return 0, top, width, top + new_h


def fit_to_shape(
    img: Image.Image, shape: tuple[int, int, int], resample: int = Image.Resampling.BICUBIC
) -> Tensor:
    """Centre-crop to the aspect ratio of ``shape`` = (C, H, W), resize, convert channels.

    Returns:
        (C, H, W) float32 in [0, 1]; unchanged pixels when the size already matches.
    """
    channels, height, width = shape
    if img.size != (width, height):
        img = img.crop(_centre_crop_box(img.width, img.height, width, height))
        img = img.resize((width, height), resample)
    return image_to_tensor(img, channels).clamp_(0.0, 1.0)


def alpha_mask(img: Image.Image) -> Tensor | None:
    """(H, W) bool from an image's alpha (alpha 0 = unknown), or None if it has no alpha."""
    if img.mode not in ("RGBA", "LA", "PA") and not (img.mode == "P" and "transparency" in img.info):
        return None
    alpha = np.asarray(img.convert("RGBA"), dtype=np.uint8)[..., 3]
    return torch.from_numpy(alpha > 0)


def decode_mask(data: bytes, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """A mask picture -> (H, W) bool, True = known, fitted to ``size`` = (H, W) (``mask_from_image``)."""
    return mask_from_image(open_image(data, max_pixels), size)


def mask_from_image(img: Image.Image, size: tuple[int, int]) -> Tensor:
    """A decoded mask picture -> (H, W) bool, True = known, fitted to ``size`` = (H, W).

    A picture with alpha marks unknown pixels with alpha 0; otherwise it is read as
    greyscale, white (>= 128) = known. It is centre-cropped and resized like a cue
    (nearest neighbour, so the mask stays sharp).
    """
    height, width = size
    if img.size != (width, height):
        img = img.crop(_centre_crop_box(img.width, img.height, width, height))
        img = img.resize((width, height), Image.Resampling.NEAREST)
    from_alpha = alpha_mask(img)
    if from_alpha is not None:
        return from_alpha
    return torch.from_numpy(np.asarray(img.convert("L"), dtype=np.uint8) >= 128)


def tensor_to_png(image: Tensor) -> bytes:
    """(C, H, W) (or (H, W)) float in [0, 1] -> PNG bytes (values clipped, rounded to 8 bits)."""
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be (1|3, H, W), got shape {tuple(image.shape)}")
    arr = (image.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    pil = (
        Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    )
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def mask_to_png(mask: Tensor) -> bytes:
    """(H, W) bool -> greyscale PNG, white = known."""
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError("mask must be a bool tensor of shape (H, W)")
    return tensor_to_png(mask.float()[None])
