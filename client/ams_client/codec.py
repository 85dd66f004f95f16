"""What users hand the client -> what the service takes, and the service's pictures -> arrays.

Inputs the client accepts wherever a pattern, cue or mask goes:

- numpy arrays and torch tensors (read through the tensor's own ``detach``/``cpu``/``numpy``:
  torch is never imported here). Numbers are sent as they are, as float32 (image memories
  hold values in [0, 1]); an array given to ``store`` is a batch, its first axis the patterns.
- PIL images, and files: a path (``str`` or ``os.PathLike``) to a PNG/JPEG picture, or to a
  ``.npy`` array; ``bytes`` of a PNG/JPEG file. Pictures go as pictures: the service decodes,
  checks and (for cues) fits them.

Vectors travel as JSON numbers with 9 significant digits, which round-trip float32 exactly.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "array_of",
    "b64",
    "count_of",
    "cue_fields",
    "decode_png",
    "image_array",
    "is_array_like",
    "is_tensor",
    "mask_field",
    "mask_picture",
    "pattern_items",
    "picture_bytes",
    "vector_json",
]


def is_tensor(x: Any) -> bool:
    """True for a torch tensor (recognised by its type's module, without importing torch)."""
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def is_array_like(x: Any) -> bool:
    return isinstance(x, np.ndarray) or is_tensor(x)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _is_picture(x: Any) -> bool:
    return isinstance(x, (Image.Image, bytes, bytearray)) or (
        _is_path(x) and Path(x).suffix.lower() != ".npy"
    )


def array_of(x: Any) -> np.ndarray:
    """An ndarray from an ndarray, a torch tensor (any device, any float type), a ``.npy``
    path, or nested lists of numbers."""
    if is_tensor(x):
        t = x.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and other types numpy lacks
            return t.float().numpy()
    if _is_path(x):
        return np.load(Path(x), allow_pickle=False)
    return np.asarray(x)


def vector_json(values: np.ndarray, what: str = "pattern") -> str:
    """A JSON array of float32 numbers, 9 significant digits (exact for float32).
    Raises ValueError for NaN or infinity, which the service refuses."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if not np.isfinite(flat).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return "[" + ",".join([f"{v:.9g}" for v in flat.tolist()]) + "]"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def picture_bytes(x: Any) -> bytes:
    """PNG/JPEG file bytes for a picture: bytes as given, a file's contents, a PIL image as
    PNG, or an array in the memory's layout ((C, H, W) or (H, W), values in [0, 1]) as an
    8-bit PNG."""
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if _is_path(x) and Path(x).suffix.lower() != ".npy":
        return Path(x).read_bytes()
    if isinstance(x, Image.Image):
        out = io.BytesIO()
        x.save(out, format="PNG")
        return out.getvalue()
    return _array_png(array_of(x))


def _array_png(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4):
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)  # (C, H, W) -> (H, W[, C])
    if a.ndim not in (2, 3):
        raise ValueError(f"a picture array must be (C, H, W) or (H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("picture holds NaN or infinite values")
    out = io.BytesIO()
    Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def mask_picture(mask: Any) -> bytes:
    """A mask picture (white = known) from a picture (as given) or a boolean array of shape
    (H, W), (1, H, W) or (C, H, W) (a pixel is known when all its channels are)."""
    if _is_picture(mask):
        return picture_bytes(mask)
    m = array_of(mask).astype(bool)
    if m.ndim == 3:
        m = m.all(axis=0)
    if m.ndim != 2:
        raise ValueError(f"a mask for a picture must be (H, W) or (C, H, W), got shape {m.shape}")
    out = io.BytesIO()
    Image.fromarray((m * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def mask_field(mask: Any) -> list[bool] | str | None:
    """A request's ``mask``: booleans (True = known; D of them, or H*W) from an array or a
    list, or a base64 mask picture from a picture."""
    if mask is None:
        return None
    if _is_picture(mask):
        return b64(picture_bytes(mask))
    return array_of(mask).astype(bool).reshape(-1).tolist()


def cue_fields(cue: Any) -> dict[str, Any]:
    """``{"vector": [...]}`` for an array (exact numbers), ``{"image": base64}`` for a picture."""
    if _is_picture(cue):
        return {"image": b64(picture_bytes(cue))}
    values = np.asarray(array_of(cue), dtype=np.float32).reshape(-1)
    if not np.isfinite(values).all():
        raise ValueError("cue holds NaN or infinite values")
    return {"vector": values.tolist()}  # float32 values as doubles: exact


def _one_pattern(item: Any) -> tuple[str | None, np.ndarray | None]:
    """One input element as (base64 picture, None) or (None, vector)."""
    if _is_picture(item):
        return b64(picture_bytes(item)), None
    if isinstance(item, (list, tuple)):
        return None, np.asarray(item, dtype=np.float32)  # one vector as a list of numbers
    return None, array_of(item)


def _is_batch_array(patterns: Any) -> bool:
    return is_array_like(patterns) or (_is_path(patterns) and Path(patterns).suffix.lower() == ".npy")


def _flatten(patterns: Any) -> Iterator[tuple[str | None, np.ndarray | None]]:
    """Every pattern of ``store``'s input, in order: an array or ``.npy`` file is a batch
    (first axis = patterns); a picture is one pattern; an iterable holds pictures and single
    patterns (arrays, or lists of numbers)."""
    if _is_batch_array(patterns):
        a = array_of(patterns)
        if a.ndim < 2:
            raise ValueError(
                f"an array given to store is a batch (first axis = patterns), got shape {a.shape}; "
                "wrap one pattern in a list, or add an axis (x[None])"
            )
        for row in a.reshape(a.shape[0], -1):
            yield None, row
    elif _is_picture(patterns):
        yield _one_pattern(patterns)
    elif isinstance(patterns, Iterable):
        for item in patterns:
            yield _one_pattern(item)
    else:
        raise TypeError(f"cannot store a {type(patterns).__name__}: give arrays, tensors, pictures or paths")


def count_of(patterns: Any) -> int | None:
    """How many patterns ``store`` will send, when that is known without reading them."""
    if is_array_like(patterns):
        return int(patterns.shape[0]) if len(patterns.shape) >= 1 else None
    if _is_picture(patterns):
        return 1
    if _is_path(patterns):  # a .npy batch: its header says
        return int(np.load(Path(patterns), mmap_mode="r", allow_pickle=False).shape[0])
    return len(patterns) if isinstance(patterns, Sequence) else None


def pattern_items(
    patterns: Any,
    ids: Sequence[str] | None = None,
    texts: Sequence[str | None] | None = None,
    metadata: Sequence[dict[str, Any] | None] | None = None,
) -> Iterator[str]:
    """One JSON object per pattern (``{"id", "text", "metadata", "vector" | "image"}``), read
    lazily, so that a large upload is never held in memory whole.

    ``ids``, ``texts`` and ``metadata``, when given, hold one entry per pattern; a count that
    differs raises ValueError before anything is read when the number of patterns is known
    (arrays, sequences), else as soon as it shows.
    """
    extras = {k: list(v) for k, v in (("id", ids), ("text", texts), ("metadata", metadata)) if v is not None}
    plural = {"id": "ids", "text": "texts", "metadata": "metadata"}
    total = count_of(patterns)
    for key, values in extras.items():
        if total is not None and len(values) != total:
            raise ValueError(f"{len(values)} {plural[key]} for {total} patterns: give one per pattern")
    count = 0
    for n, (image, vector) in enumerate(_flatten(patterns)):
        count = n + 1
        fields: dict[str, Any] = {}
        for key, values in extras.items():
            if n >= len(values):
                raise ValueError(f"{len(values)} {plural[key]} for more patterns: give one per pattern")
            if values[n] is not None:
                fields[key] = values[n]
        if image is not None:
            fields["image"] = image
            yield json.dumps(fields, separators=(",", ":"))
        else:
            head = json.dumps(fields, separators=(",", ":"))[:-1]
            sep = "," if len(head) > 1 else ""
            yield f'{head}{sep}"vector":{vector_json(vector, f"pattern {n}")}}}'
    for key, values in extras.items():
        if len(values) != count:
            raise ValueError(f"{len(values)} {plural[key]} for {count} patterns: give one per pattern")


def decode_png(data: str | bytes) -> Image.Image:
    """A picture from base64 text or PNG bytes, loaded (the file closed)."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        return img.copy()


def image_array(img: Image.Image) -> np.ndarray:
    """(C, H, W) float32 in [0, 1] (C = 1 for grey, 3 for colour): the service's layout."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB" if img.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else np.ascontiguousarray(np.moveaxis(a, -1, 0))
