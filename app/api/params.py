"""What the routers share: path parameters, and the reading of request bodies and limits."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Path, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from ..codec import cue_values, is_image
from ..exceptions import ApiError, ServiceError
from ..gate import body_limit, value_limit
from ..schemas import ID_PATTERN, NAME_PATTERN
from ..settings import Settings
from ..storage import MemoryRecord, storage_error

__all__ = [
    "JobIdParam",
    "NameParam",
    "PatternIdParam",
    "body_kind",
    "check_limits",
    "decode_cursor",
    "encode_cursor",
    "form_bool",
    "form_int",
    "image_form",
    "page_limit",
    "picture_form_schema",
    "read_form",
    "recall_body_limit",
    "recall_limits",
    "recall_value_limit",
]

F = TypeVar("F", bound=Callable[..., Any])

# Bytes a JSON value of a cue may take: the longest float (-1.2345678901234567e-308), its
# comma, and indentation to spare.
_BYTES_PER_VALUE = 48

NameParam = Path(pattern=NAME_PATTERN, description="the memory's name", examples=["fashion"])
PatternIdParam = Path(pattern=ID_PATTERN, description="the pattern's id", examples=["shoe-1"])
JobIdParam = Path(pattern=r"^[0-9a-f]{1,64}$", description="the job's id", examples=["3f2a9c0e5b7d4c1a"])


def body_kind(request: Request) -> str:
    """ "json" or "multipart" from the Content-Type; 415 for anything else."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("", "application/json") or ctype.endswith("+json"):
        return "json"
    if ctype == "multipart/form-data":
        return "multipart"
    raise ApiError(
        415, "unsupported_media_type", f"Content-Type {ctype!r}: send application/json or multipart/form-data"
    )


async def read_form(request: Request, max_files: int) -> dict[str, list]:
    """Parse a multipart body: field name -> [bytes (files) or str (fields)]; 400 when malformed."""
    try:
        form = await request.form(max_files=max_files, max_fields=3 * max_files + 10)
    except OSError as exc:  # spooling an upload to a full disk
        raise storage_error(exc) from exc
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if "Too many files" in detail:
            raise ApiError(422, "batch_too_large", f"{detail} (AMS_MAX_BATCH)") from None
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {detail}") from None
    out: dict[str, list] = {}
    try:
        for key, value in form.multi_items():
            out.setdefault(key, []).append(await value.read() if isinstance(value, UploadFile) else value)
    finally:
        await form.close()
    return out


def _record(scope: Scope, params: dict[str, Any]) -> MemoryRecord | None:
    """The record of the memory a path names (failed ones included), or None."""
    service = scope["app"].state.service
    if service.registry is None:
        return None
    try:
        return service.registry.get(params.get("name", ""), allow_failed=True).record
    except ServiceError:
        return None


def recall_value_limit(scope: Scope, params: dict[str, Any]) -> tuple[int, str] | None:
    """The most values a recall's JSON body may hold (``gate.value_limit``): ``cue_values``
    of its memory, so that a body of more (a 30 MB vector sent to an image memory, whose
    cues may be large pictures) is refused at its first chunk past them, not read whole."""
    record = _record(scope, params)
    if record is None:
        return None
    return cue_values(
        record, scope["app"].state.service.settings
    ), f"a recall of memory {record.name!r} (D = {record.dim})"


def recall_limits(endpoint: F) -> F:
    """Mark a recall route (retrieve, complete, lookup): its body bounded in bytes by
    ``recall_body_limit`` and in values by ``recall_value_limit`` (gate.py)."""
    return body_limit(recall_body_limit)(value_limit(recall_value_limit)(endpoint))


def recall_body_limit(scope: Scope, params: dict[str, Any]) -> tuple[int, str] | None:
    """The body limit of a recall of a vector memory (``gate.body_limit``): what its largest
    cue can take (``cue_values``: a vector and a mask of D values, a caption), so that a
    larger body is refused on its Content-Length, before it is read. None (the default
    limit) for image memories, whose cues are pictures, and for names that are not a memory."""
    record = _record(scope, params)
    if record is None or is_image(record):
        return None
    limit = _BYTES_PER_VALUE * cue_values(record, scope["app"].state.service.settings) + 65536
    return limit, f"a recall of memory {record.name!r}, D = {record.dim}, takes at most {limit} bytes"


def check_limits(k: int, steps: int, settings: Settings) -> None:
    if k > settings.max_k:
        raise ApiError(422, "k_too_large", f"k = {k} is over AMS_MAX_K = {settings.max_k}")
    if steps > settings.max_steps:
        raise ApiError(
            422, "steps_too_large", f"steps = {steps} is over AMS_MAX_STEPS = {settings.max_steps}"
        )


def picture_form_schema(image: str, k: str, **options: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema of a multipart picture query (``image_form``'s fields): an ``image``
    file (described by ``image``), an optional ``mask`` picture, ``k`` (described by ``k``) and
    the endpoint's further ``options`` (name -> JSON schema)."""
    return {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": image},
            "mask": {
                "type": "string",
                "format": "binary",
                "description": "mask picture: white = known, black = unknown",
            },
            "k": {"type": "integer", "minimum": 1, "description": k},
            **options,
        },
    }


def image_form(
    fields: dict[str, list], endpoint: str, default_k: int, options: tuple[str, ...] = ()
) -> tuple[bytes, bytes | None, int]:
    """Multipart fields of a picture query: (image bytes, mask bytes or None, k).

    ``options``: the endpoint's further text fields (read with ``form_int`` / ``form_bool``);
    any other field is a 422 naming it, as an unknown key of the JSON body is."""
    taken = ("image", "mask", "k", *options)
    unknown = [key for key in fields if key not in taken]
    if unknown:
        raise ApiError(
            422,
            "invalid_multipart",
            f"{endpoint} takes no multipart field {unknown[0]!r}; its fields: {', '.join(taken)}",
        )
    images, masks = fields.get("image", []), fields.get("mask", [])
    if len(images) != 1:
        raise ApiError(
            422, "invalid_multipart", f"{endpoint} needs exactly one file in field 'image'; got {len(images)}"
        )
    if not isinstance(images[0], bytes):
        raise ApiError(
            422, "invalid_multipart", "field 'image' must be a file (curl: -F image=@cue.png), not text"
        )
    if len(masks) > 1 or (masks and not isinstance(masks[0], bytes)):
        raise ApiError(422, "invalid_multipart", "field 'mask' must be one file")
    return images[0], masks[0] if masks else None, form_int(fields, "k", default_k)


def _form_text(fields: dict[str, list], key: str) -> str | None:
    """The one text value of multipart field ``key``, or None when absent."""
    values = fields.get(key, [])
    if len(values) > 1:
        raise ApiError(422, "invalid_multipart", f"field {key!r} given {len(values)} times; give it once")
    if values and not isinstance(values[0], str):
        raise ApiError(422, "invalid_multipart", f"field {key!r} must be text, not a file")
    return values[0].strip() if values else None


def form_int(fields: dict[str, list], key: str, default: int) -> int:
    """Multipart text field ``key`` as an integer >= 1 (``default`` when absent)."""
    text = _form_text(fields, key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(
            422, "validation_error", f"field {key!r} must be an integer, not {text[:40]!r}"
        ) from None
    if value < 1:
        raise ApiError(422, "validation_error", f"field {key!r} must be >= 1")
    return value


def form_bool(fields: dict[str, list], key: str, default: bool) -> bool:
    """Multipart text field ``key`` as a boolean: ``true`` or ``false``, as in JSON."""
    text = _form_text(fields, key)
    if text is None:
        return default
    if text not in ("true", "false"):
        raise ApiError(422, "validation_error", f"field {key!r} must be true or false, not {text[:40]!r}")
    return text == "true"


def page_limit(limit: int | None, settings: Settings) -> int:
    """A listing's page size: 100 (or AMS_MAX_PAGE if lower) by default; 422 over AMS_MAX_PAGE."""
    if limit is None:
        return min(100, settings.max_page)
    if limit > settings.max_page:
        raise ApiError(422, "limit_too_large", f"limit {limit} is over AMS_MAX_PAGE = {settings.max_page}")
    return limit


def encode_cursor(seq: int) -> str:
    """The opaque cursor of a listing's next page: after ``seq``."""
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The ``seq`` an ``encode_cursor`` cursor stands for; 422 ``invalid_cursor`` otherwise."""
    try:
        seq = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_cursor", "cursor is not one this service gave out") from None
    if not 0 <= seq < 2**63:  # storage's sequence numbers are 64-bit
        raise ApiError(422, "invalid_cursor", "cursor is not one this service gave out")
    return seq
