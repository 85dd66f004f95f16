"""Patterns of a memory: store a batch (JSON or multipart), page through, get one, delete."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from ..codec import RawPattern, is_image, png_base64, png_bytes, prepare_patterns, store_items
from ..exceptions import ApiError, PatternNotFound
from ..kinds import pattern_memory
from ..schemas import ID_PATTERN, PatternOut, PatternPage, PatternSummary, StoreResult
from .deps import READ, READ_ERRORS, WRITE, WRITE_ERRORS, RegistryDep, ServiceDep, errors, run_sync, wants_png
from .params import NameParam, PatternIdParam, body_kind, decode_cursor, encode_cursor, page_limit, read_form

router = APIRouter(prefix="/v1/memories", tags=["patterns"])

_MULTIPART_STORE = {
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "PNG/JPEG files, one pattern each",
        },
        "ids": {
            "type": "array",
            "items": {"type": "string", "pattern": ID_PATTERN},
            "description": "optional ids, one per image, in order",
        },
        "texts": {
            "type": "array",
            "items": {"type": "string"},
            "description": "optional captions, one per image",
        },
    },
}
STORE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/StorePatterns"}},
            "multipart/form-data": {"schema": _MULTIPART_STORE},
        },
    }
}


def _texts(fields: dict[str, list], key: str, n: int) -> list[str | None]:
    values = fields.get(key, [])
    if any(not isinstance(v, str) for v in values):
        raise ApiError(422, "invalid_multipart", f"multipart field {key!r} must be text, not a file")
    if values and len(values) != n:
        raise ApiError(
            422, "invalid_multipart", f"{len(values)} {key!r} for {n} images: give one per image or none"
        )
    return values or [None] * n


def multipart_patterns(fields: dict[str, list]) -> list[RawPattern]:
    unknown = [key for key in fields if key not in _MULTIPART_STORE["properties"]]
    if unknown:  # a typo (e.g. 'image' for 'images') is named, not silently dropped
        raise ApiError(
            422,
            "invalid_multipart",
            f"store takes no multipart field {unknown[0]!r}; its fields: {', '.join(_MULTIPART_STORE['properties'])}",
        )
    images = fields.get("images", [])
    if not images:
        raise ApiError(422, "invalid_multipart", "multipart store needs one or more files in field 'images'")
    if any(not isinstance(v, bytes) for v in images):
        raise ApiError(422, "invalid_multipart", "field 'images' must hold files")
    ids, texts = _texts(fields, "ids", len(images)), _texts(fields, "texts", len(images))
    return [RawPattern(id=i, image=data, text=t) for i, data, t in zip(ids, images, texts)]


@router.post(
    "/{name}/patterns",
    status_code=201,
    response_model=StoreResult,
    dependencies=WRITE,
    openapi_extra=STORE_BODY,
    responses=errors(400, 404, 409, 413, 415, 422, *WRITE_ERRORS),
)
async def store_patterns(
    request: Request,
    registry: RegistryDep,
    service: ServiceDep,
    name: str = NameParam,
    fit: bool = Query(False, description="centre-crop and resize images of another size"),
) -> StoreResult:
    """Store a batch of patterns; returns their ids once they are durable (201).

    JSON: `{"patterns": [{"id"?, "vector" | "image" (base64 PNG/JPEG), "text"?, "metadata"?}]}`.
    Multipart: files in field `images` (optional `ids`, `texts`, one per file). Every pattern is
    checked first: one bad pattern (shape, dimension, NaN, image, duplicate id) stores nothing.
    What the batch takes in memory is checked against the memory budget first (422
    `memory_budget_exceeded` naming the limit, or 503 `server_busy` while others hold it).
    """
    live = pattern_memory(registry.get(name), "storing patterns")
    settings = service.settings
    if body_kind(request) == "multipart":
        items = multipart_patterns(await read_form(request, settings.max_batch))
    else:
        body = await request.body()
        items = None

    def work() -> StoreResult:
        raw = items if items is not None else store_items(body, live.record, settings)
        with registry.storing(live, len(raw)):
            patterns, vectors = prepare_patterns(raw, live.record, settings, fit, registry.budget)
            ids, count = registry.store(live, patterns, vectors)
        service.metrics.patterns_stored.labels(live.kind).inc(len(ids))
        return StoreResult(ids=ids, count=count)

    return await run_sync(work)


@router.get(
    "/{name}/patterns",
    response_model=PatternPage,
    dependencies=READ,
    responses=errors(404, 422, *READ_ERRORS),
)
async def list_patterns(
    registry: RegistryDep,
    service: ServiceDep,
    name: str = NameParam,
    limit: int | None = Query(None, ge=1, description="page size: default 100, at most AMS_MAX_PAGE"),
    cursor: str | None = Query(None, max_length=64, description="next_cursor of the last page"),
) -> PatternPage:
    """A page of patterns in storage order: `{id, text, metadata}` each, and `next_cursor`."""
    limit = page_limit(limit, service.settings)
    # a failed memory's patterns can still be read out
    live = pattern_memory(registry.get(name, allow_failed=True), "listing patterns")
    after = decode_cursor(cursor) if cursor else -1
    rows = await run_sync(registry.storage.page_patterns, live.record.id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return PatternPage(
        patterns=[PatternSummary(id=r.id, text=r.text, metadata=r.metadata) for r in rows],
        next_cursor=encode_cursor(rows[-1].seq) if more else None,
    )


@router.get(
    "/{name}/patterns/{pattern_id}",
    response_model=PatternOut,
    dependencies=READ,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the pattern; the picture itself with `Accept: image/png`",
        },
        **errors(404, 406, 422, *READ_ERRORS),
    },
)
async def get_pattern(
    request: Request, registry: RegistryDep, name: str = NameParam, pattern_id: str = PatternIdParam
) -> PatternOut | Response:
    """One stored pattern: JSON (image memories: base64 PNG `image`; vector memories: `vector`),
    or the PNG itself with `Accept: image/png` (image memories)."""
    live = pattern_memory(registry.get(name, allow_failed=True), "reading a pattern")
    record = live.record
    png = wants_png(request)
    if png and not is_image(record):
        raise ApiError(406, "not_acceptable", f"memory {name!r} stores vectors, not pictures: ask for JSON")
    row = await run_sync(registry.storage.get_pattern, record.id, pattern_id)
    if row is None:
        raise PatternNotFound(name, pattern_id)
    vector = row.vector[: record.dim]  # a text memory also stores the caption's embedding
    if png:
        return Response(await run_sync(png_bytes, vector, record.shape), media_type="image/png")
    if is_image(record):
        image = await run_sync(png_base64, vector, record.shape)
        return PatternOut(id=row.id, text=row.text, metadata=row.metadata, image=image)
    return PatternOut(id=row.id, text=row.text, metadata=row.metadata, vector=vector.tolist())


@router.delete(
    "/{name}/patterns/{pattern_id}",
    status_code=204,
    response_class=Response,
    dependencies=WRITE,
    responses=errors(404, 422, *WRITE_ERRORS),
)
async def delete_pattern(
    registry: RegistryDep, name: str = NameParam, pattern_id: str = PatternIdParam
) -> Response:
    """Delete one pattern (durable on return)."""
    pattern_memory(registry.get(name), "deleting a pattern")
    await run_sync(registry.delete_pattern, name, pattern_id)
    return Response(status_code=204)
