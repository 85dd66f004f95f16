"""Request payloads -> tensors, and results -> payloads, with every check named.

Each function raises ``ApiError`` with DESIGN.md's codes: 422 for a wrong shape,
dimension, non-finite number, bad base64 or undecodable image (PNG and JPEG only); 413
for an image with too many pixels. It runs on a worker thread (never on the event loop):
decoding images and building tensors is CPU work. What decoding a picture takes is
reserved against the memory budget (budget.py) from its header's size, before it is
decoded; a store's JSON body is parsed one pattern at a time (jsonbody.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor

from memory_core import resolve_device
from memory_core.images import (
    ImageError,
    ImageTooLarge,
    alpha_mask,
    fit_to_shape,
    image_to_tensor,
    load_image,
    mask_from_image,
    peek_image,
    tensor_to_png,
)
from memory_core.masks import pixel_mask_to_vector

from .errors import clean_validation_errors, invalid_request
from .exceptions import ApiError
from .jsonbody import NotAnEnvelope, array_items, value_count
from .schemas import ID_PATTERN, PatternIn, StorePatterns
from .settings import Settings
from .storage import MemoryRecord, NewPattern
from .text_memory import stored_dim, with_captions

if TYPE_CHECKING:
    from PIL import Image

    from .budget import MemoryBudget

__all__ = [
    "RawPattern",
    "b64decode",
    "check_known",
    "cue_image",
    "image_bytes_to_vector",
    "is_image",
    "list_mask",
    "parse_json",
    "picture_mask",
    "png_base64",
    "png_bytes",
    "prepare_patterns",
    "store_items",
    "vector_tensor",
]

# Bytes a decoded picture takes per pixel on its way to a tensor: Pillow's RGBA (4), a
# converted copy (4), float32 RGB (12), and slack for a crop and a resize.
_BYTES_PER_PIXEL = 24
# Bodies this small are parsed whole when they are not the plain {"patterns": [...]}
# (for pydantic's exact errors); larger ones never are (jsonbody.py).
_WHOLE_PARSE_BYTES = 1 << 20
_B64_SLICE = 4 << 20  # a multiple of 4: slices of valid base64 decode on their own

_ID = re.compile(ID_PATTERN)
_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)


def is_image(record: MemoryRecord) -> bool:
    """Image memories have shape (C, H, W); vector memories (D,)."""
    return len(record.shape) == 3


def parse_json(body: bytes, model: type[BaseModel], loc: tuple = ("body",)) -> Any:
    """Validate a JSON body (or a part of one, at ``loc``) against a model: 400 invalid_json,
    422 validation_error."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = clean_validation_errors(exc.errors(include_url=False))
        for err in errors:
            err["loc"] = [*loc, *err["loc"]]
        raise ApiError(*invalid_request(errors), errors) from None


def b64decode(text: str, what: str) -> bytes:
    """Strict base64 (a data: URL prefix is allowed) -> bytes; 422 invalid_base64."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    try:  # 4 MiB of text at a time: a large picture never holds the GIL for long
        step = _B64_SLICE
        data = b"".join(
            base64.b64decode(text[i : i + step], validate=True) for i in range(0, len(text), step)
        )
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_base64", f"{what} is not valid base64") from None
    if not data:
        raise ApiError(422, "invalid_image", f"{what} is empty")
    return data


def vector_tensor(values: list[float] | Tensor, dim: int, what: str) -> Tensor:
    """A JSON list of numbers -> (dim,) float32; 422 on a wrong length or NaN/inf (a tensor
    is one checked already)."""
    if isinstance(values, Tensor):
        return values
    if len(values) != dim:
        raise ApiError(
            422, "dimension_mismatch", f"{what} has {len(values)} numbers; this memory has D = {dim}"
        )
    # Through numpy: a list of 784 floats converts 3x faster than with torch.tensor (a
    # recall's cue is parsed per request). Numbers beyond float32 become inf, refused below.
    with np.errstate(over="ignore"):
        x = np.array(values, dtype=np.float32)  # (D,)
    if not np.isfinite(x).all():
        raise ApiError(
            422, "non_finite", f"{what} contains NaN or infinite values (or numbers beyond float32)"
        )
    return torch.from_numpy(x)


@contextmanager
def _decoded(data: bytes, what: str, max_pixels: int, budget: MemoryBudget | None) -> Iterator[Image.Image]:
    """The decoded picture (PNG or JPEG, EXIF orientation applied) while the block runs, with
    what decoding and converting it takes reserved from the budget by its header's size."""
    try:
        img = peek_image(data, max_pixels)
    except ImageTooLarge as exc:
        raise ApiError(413, "image_too_large", f"{what}: {exc}") from None
    except ImageError as exc:
        raise ApiError(422, "invalid_image", f"{what}: {exc}") from None
    nbytes = img.width * img.height * _BYTES_PER_PIXEL
    with budget.reserve(nbytes, f"decoding {what}") if budget is not None else nullcontext():
        try:
            loaded = load_image(img)
        except ImageTooLarge as exc:
            raise ApiError(413, "image_too_large", f"{what}: {exc}") from None
        except ImageError as exc:
            raise ApiError(422, "invalid_image", f"{what}: {exc}") from None
        yield loaded


def image_bytes_to_vector(
    data: bytes,
    shape: tuple[int, int, int],
    fit: bool,
    max_pixels: int,
    what: str,
    budget: MemoryBudget | None = None,
) -> Tensor:
    """A stored image -> (C*H*W,) float32 in [0, 1].

    Its size must be the memory's unless ``fit`` (then it is centre-cropped and
    resized). Grey and colour are converted to the memory's channel count.
    """
    channels, height, width = shape
    with _decoded(data, what, max_pixels, budget) as img:
        if img.size != (width, height):
            if not fit:
                raise ApiError(
                    422,
                    "shape_mismatch",
                    f"{what} is {img.width}x{img.height} pixels; this memory stores {width}x{height} "
                    "(pass ?fit=true to centre-crop and resize)",
                )
            return fit_to_shape(img, shape).reshape(-1)
        return image_to_tensor(img, channels).reshape(-1)  # (C*H*W,)


def cue_image(
    data: bytes, shape: tuple[int, int, int], max_pixels: int, what: str, budget: MemoryBudget | None = None
) -> tuple[Tensor, Tensor | None]:
    """A cue picture -> ((C*H*W,) float32, (H, W) bool alpha mask or None).

    The picture is centre-cropped and resized to the memory's shape (DESIGN.md); an
    image with an alpha channel marks its unknown pixels with alpha 0, and that mask
    is fitted the same way (nearest neighbour).
    """
    with _decoded(data, what, max_pixels, budget) as img:
        x = fit_to_shape(img, shape).reshape(-1)  # (C*H*W,)
        if alpha_mask(img) is None:
            return x, None
        return x, mask_from_image(img, shape[1:])  # (H, W), True = known


def list_mask(values: list[bool], record: MemoryRecord) -> Tensor:
    """A JSON list of booleans -> (D,) bool: D entries, or H*W pixels of an image memory."""
    mask = torch.tensor(values, dtype=torch.bool)
    if is_image(record) and mask.numel() == record.shape[1] * record.shape[2]:
        mask = pixel_mask_to_vector(mask.reshape(record.shape[1:]), record.shape[0])
    elif mask.numel() != record.dim:
        pixels = f" (or H*W = {record.shape[1] * record.shape[2]})" if is_image(record) else ""
        raise ApiError(
            422, "dimension_mismatch", f"mask has {mask.numel()} entries; expected D = {record.dim}{pixels}"
        )
    return check_known(mask, "mask")


def picture_mask(
    data: bytes, record: MemoryRecord, max_pixels: int, what: str, budget: MemoryBudget | None = None
) -> Tensor:
    """A mask picture (white = known, or alpha 0 = unknown) -> (D,) bool, fitted to the memory."""
    if not is_image(record):
        raise ApiError(
            422, "not_an_image_memory", f"{what} is a picture, but memory {record.name!r} stores vectors"
        )
    with _decoded(data, what, max_pixels, budget) as img:
        pixels = mask_from_image(img, record.shape[1:])  # (H, W)
    return check_known(pixel_mask_to_vector(pixels, record.shape[0]), what)


def check_known(mask: Tensor, what: str) -> Tensor:
    """A mask needs at least one known entry."""
    if not bool(mask.any()):
        raise ApiError(422, "empty_mask", f"{what} marks every entry unknown: nothing to recall from")
    return mask


def parse_cue(
    record: MemoryRecord,
    settings: Settings,
    vector: list[float] | None,
    image: str | None,
    mask: list[bool] | str | None,
    budget: MemoryBudget | None = None,
) -> tuple[Tensor, Tensor | None]:
    """A JSON cue -> (cue (D,), mask (D,) bool or None).

    Exactly one of ``vector`` or ``image`` (base64; fitted to the memory's shape); the
    mask is a list of booleans, a base64 mask picture, or an RGBA image's alpha.
    """
    if (vector is None) == (image is None):
        raise ApiError(422, "invalid_cue", "give exactly one of 'vector' or 'image'")
    alpha = None
    if image is not None:
        if not is_image(record):
            raise ApiError(
                422, "not_an_image_memory", f"memory {record.name!r} stores vectors: send 'vector'"
            )
        data = b64decode(image, "image")
        cue, alpha = cue_image(data, record.shape, settings.max_image_pixels, "image", budget)
    else:
        cue = vector_tensor(vector, record.dim, "vector")
    if isinstance(mask, list):
        return cue, list_mask(mask, record)
    if isinstance(mask, str):
        data = b64decode(mask, "mask")
        return cue, picture_mask(data, record, settings.max_image_pixels, "mask", budget)
    if alpha is not None:
        return cue, check_known(pixel_mask_to_vector(alpha, record.shape[0]), "the image's alpha")
    return cue, None


def picture_cue(
    record: MemoryRecord,
    settings: Settings,
    image: bytes,
    mask: bytes | None,
    budget: MemoryBudget | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Picture bytes (+ optional mask picture bytes) -> (cue (D,), mask (D,) bool or None).

    The cue is fitted to the memory's shape; without a mask picture, an RGBA image's
    alpha 0 marks the unknown pixels.
    """
    cue, alpha = cue_image(image, record.shape, settings.max_image_pixels, "image", budget)  # (D,), (H, W)?
    if mask is not None:
        return cue, picture_mask(mask, record, settings.max_image_pixels, "mask", budget)
    if alpha is not None:
        return cue, check_known(pixel_mask_to_vector(alpha, record.shape[0]), "the image's alpha")
    return cue, None


@dataclass(frozen=True)
class RawPattern:
    """One pattern as received: ``image`` is base64 text (JSON) or bytes (multipart);
    ``vector`` a JSON list, or the (D,) tensor ``store_items`` checked it into."""

    id: str | None = None
    vector: list[float] | Tensor | None = None
    image: str | bytes | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None


def prepare_patterns(
    items: list[RawPattern],
    record: MemoryRecord,
    settings: Settings,
    fit: bool = False,
    budget: MemoryBudget | None = None,
) -> tuple[list[NewPattern], Tensor]:
    """Check and decode a batch: (patterns to store, vectors (n, D) float32).

    Every item is checked before anything is stored, so a bad item stores nothing.
    """
    if not items:
        raise ApiError(422, "empty_batch", "no patterns in the request")
    if len(items) > settings.max_batch:
        raise ApiError(
            422, "batch_too_large", f"{len(items)} patterns in one request; the limit is {settings.max_batch}"
        )
    seen: set[str] = set()
    patterns, vectors = [], []
    for i, item in enumerate(items):
        what = f"patterns[{i}]"
        pid = item.id or uuid.uuid4().hex
        if not _ID.fullmatch(pid):
            raise ApiError(422, "invalid_id", f"{what}.id {pid[:140]!r} must match {ID_PATTERN}")
        if pid in seen:
            raise ApiError(422, "duplicate_id", f"{what}.id {pid!r} appears twice in the batch")
        seen.add(pid)
        if (item.vector is None) == (item.image is None):
            raise ApiError(422, "invalid_pattern", f"{what} needs exactly one of 'vector' or 'image'")
        if item.image is not None:
            if not is_image(record):
                raise ApiError(
                    422,
                    "not_an_image_memory",
                    f"{what}.image given, but memory {record.name!r} stores vectors of D = {record.dim}",
                )
            data = item.image if isinstance(item.image, bytes) else b64decode(item.image, f"{what}.image")
            vec = image_bytes_to_vector(
                data, record.shape, fit, settings.max_image_pixels, f"{what}.image", budget
            )
        else:
            vec = vector_tensor(item.vector, record.dim, f"{what}.vector")
        if item.text is not None and len(item.text) > settings.max_text_chars:
            raise ApiError(
                422,
                "text_too_long",
                f"{what}.text has {len(item.text)} characters; the limit is {settings.max_text_chars}",
            )
        if item.metadata is not None:
            try:
                size = len(json.dumps(item.metadata, allow_nan=False).encode())
            except ValueError:
                raise ApiError(
                    422, "non_finite", f"{what}.metadata contains NaN or infinite numbers"
                ) from None
            if size > settings.max_metadata_bytes:
                raise ApiError(
                    422,
                    "metadata_too_large",
                    f"{what}.metadata is {size} bytes as JSON; the limit is {settings.max_metadata_bytes}",
                )
        patterns.append(NewPattern(id=pid, vector=vec.numpy(), text=item.text, metadata=item.metadata))
        vectors.append(vec)
    if record.text:  # cross-modal: store [pattern ; caption embedding]
        return with_captions(record, patterns, torch.stack(vectors), resolve_device(settings.device))
    return patterns, torch.stack(vectors)  # (n, D)


def cue_values(record: MemoryRecord, settings: Settings) -> int:
    """The most values a recall's JSON body can need for this memory: a vector and a mask
    of D entries each (or H*W for a pixel mask), a caption's commas, and a few fields."""
    pixels = record.shape[1] * record.shape[2] if is_image(record) else 0
    return 2 * record.dim + pixels + settings.max_text_chars + 64


def store_items(body: bytes, record: MemoryRecord, settings: Settings) -> list[RawPattern]:
    """A store's JSON body ``{"patterns": [...]}`` -> its patterns, parsed one at a time, each
    vector checked against D and made a compact tensor before the next is parsed
    (jsonbody.py); 400 / 422 with the errors pydantic would give."""
    try:
        spans = array_items(body, "patterns")
    except NotAnEnvelope as exc:
        if len(body) <= _WHOLE_PARSE_BYTES:
            parse_json(body, StorePatterns)  # raises pydantic's own error for it
        if exc.malformed:
            raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
        raise ApiError(
            422, "validation_error", f'a store\'s JSON body is {{"patterns": [...]}} and nothing else: {exc}'
        ) from None
    if not spans:
        parse_json(body, StorePatterns)  # [] is refused by the schema: its error
    if len(spans) > settings.max_batch:
        raise ApiError(
            422, "batch_too_large", f"{len(spans)} patterns in one request; the limit is {settings.max_batch}"
        )
    most = stored_dim(record.shape, False) + settings.max_metadata_bytes + settings.max_text_chars + 16
    items = []
    for i, (start, end) in enumerate(spans):
        if value_count(body, start, end) > most:
            raise ApiError(
                422,
                "too_many_values",
                f"patterns[{i}] holds more values than a pattern of this memory can (D = {record.dim}, "
                "with metadata and caption)",
            )
        item = parse_json(body[start:end], PatternIn, ("body", "patterns", i))
        vector = (
            None if item.vector is None else vector_tensor(item.vector, record.dim, f"patterns[{i}].vector")
        )
        items.append(RawPattern(item.id, vector, item.image, item.text, item.metadata))
    return items


def png_base64(vector: Tensor | np.ndarray, shape: tuple[int, int, int]) -> str:
    """(C*H*W,) in [0, 1] -> base64 PNG."""
    return base64.b64encode(png_bytes(vector, shape)).decode("ascii")


def png_bytes(vector: Tensor | np.ndarray, shape: tuple[int, int, int]) -> bytes:
    """(C*H*W,) in [0, 1] -> PNG bytes. A read-only array (one from storage's buffers) is
    copied: torch warns about wrapping one, though nothing here writes to it."""
    if isinstance(vector, np.ndarray) and not vector.flags.writeable:
        vector = vector.copy()
    return tensor_to_png(torch.as_tensor(vector).reshape(shape))
