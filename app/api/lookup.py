"""Cross-modal lookup in a ``text: true`` memory: a caption finds patterns, a pattern finds captions.

Both directions are pattern completion (DESIGN.md): the missing part of the joint
[pattern ; caption embedding] is unknown and the memory fills it in.
"""

from __future__ import annotations

import torch
from fastapi import APIRouter, Request, Response

from ..codec import cue_values, is_image, parse_cue, parse_json, picture_cue, png_base64
from ..exceptions import ApiError
from ..jsonbody import check_values
from ..kinds import CaptionLookup, LiveMemory, TextLookup, pattern_memory
from ..registry import Registry
from ..schemas import LookupCaption, LookupPattern, LookupRequest, LookupResult, RecalledPattern
from ..service import Service
from ..text_memory import embed
from .deps import READ, READ_ERRORS, RegistryDep, ServiceDep, errors, json_bytes_response, run_sync
from .params import (
    NameParam,
    body_kind,
    check_limits,
    image_form,
    picture_form_schema,
    read_form,
    recall_limits,
)

router = APIRouter(prefix="/v1/memories", tags=["recall"])

_MULTIPART_LOOKUP = picture_form_schema("a picture (PNG/JPEG) to caption", "how many captions to return")
LOOKUP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LookupRequest"}},
            "multipart/form-data": {"schema": _MULTIPART_LOOKUP},
        },
    }
}


def _by_text(live: LiveMemory, found: TextLookup, storage) -> LookupResult:
    record = live.record
    matches = found.matches[0]
    texts = storage.get_texts(record.id, [pid for pid, _ in matches])
    image = is_image(record)
    patterns = [
        LookupPattern(
            id=pid,
            text=texts.get(pid),
            score=score,
            image=png_base64(found.stored[0, j].clamp(0, 1), record.shape) if image else None,
            vector=None if image else found.stored[0, j].tolist(),
        )
        for j, (pid, score) in enumerate(matches)
    ]
    output = found.outputs[0]
    completion = (
        RecalledPattern(image=png_base64(output.clamp(0, 1), record.shape))
        if image
        else RecalledPattern(vector=output.tolist())
    )
    return LookupResult(
        query="text",
        completion=completion,
        patterns=patterns,
        energy=found.energies[0],
        state=found.state,
        trained_count=found.trained_count,
    )


def _by_pattern(live: LiveMemory, found: CaptionLookup, storage) -> LookupResult:
    record = live.record
    matches = found.matches[0]
    texts = storage.get_texts(record.id, [pid for pid, _ in matches])
    return LookupResult(
        query="image" if is_image(record) else "vector",
        captions=[LookupCaption(id=pid, text=texts.get(pid), score=score) for pid, score in matches],
        energy=found.energies[0],
        state=found.state,
        trained_count=found.trained_count,
    )


@router.post(
    "/{name}/lookup",
    response_model=LookupResult,
    response_model_exclude_none=False,
    dependencies=READ,
    openapi_extra=LOOKUP_BODY,
    responses=errors(400, 404, 409, 413, 415, 422, *READ_ERRORS),
)
@recall_limits
async def lookup(
    request: Request, registry: RegistryDep, service: ServiceDep, name: str = NameParam
) -> Response:
    """Cross-modal lookup in a memory created with `text: true`.

    - `{"text": "...", "k": 5}`: the caption part is given and the pattern completed;
      answers `completion` (the memory's completed pattern) and `patterns` (the k stored
      pairs whose captions fit the query best, under the memory's similarity, with their
      pictures and captions).
    - `{"image": <base64>, "mask"?: ...}` (or multipart `image` + `mask`), or `{"vector": [...]}`
      for vector memories: the pattern (all of it, or the known part) is given and the caption
      part completed; answers `captions`, the k stored captions nearest it (cosine).
    """
    return await lookup_response(request, service, registry, name)


async def lookup_response(request: Request, service: Service, registry: Registry, name: str) -> Response:
    """The lookup endpoint once the API key is checked and the registry is ready (shared by
    the route above and the fast path, app/fastpath.py)."""
    settings = service.settings
    live = pattern_memory(registry.get(name), "lookup")
    record = live.record
    if not record.text:
        raise ApiError(
            422, "not_a_text_memory", f"memory {name!r} was created without text: true; it holds no captions"
        )
    if body_kind(request) == "multipart":
        fields = await read_form(request, 2)
        body = None
    else:
        body = await request.body()
        fields = None

    def query() -> tuple[str, torch.Tensor, torch.Tensor | None, int]:
        """The parsed query: ("text", embedding (384,), None, k) or ("pattern", cue (D,), mask, k)."""
        if fields is not None:
            image, mask_data, k = image_form(fields, "lookup", default_k=5)
            check_limits(k, 1, settings)
            if not is_image(record):
                raise ApiError(
                    422, "not_an_image_memory", f"memory {name!r} stores vectors: send JSON 'vector'"
                )
            cue, mask = picture_cue(record, settings, image, mask_data, registry.budget)
            return "pattern", cue, mask, k
        check_values(body, cue_values(record, settings), f"a lookup in memory {name!r} (D = {record.dim})")
        req = parse_json(body, LookupRequest)
        check_limits(req.k, 1, settings)
        if req.text is not None:
            if req.image is not None or req.vector is not None or req.mask is not None:
                raise ApiError(422, "invalid_cue", "a text query takes no 'image', 'vector' or 'mask'")
            if len(req.text) > settings.max_text_chars:
                raise ApiError(
                    422,
                    "text_too_long",
                    f"text has {len(req.text)} characters; the limit is {settings.max_text_chars}",
                )
            if not req.text.strip():
                raise ApiError(422, "invalid_cue", "text is blank")
            return "text", embed([req.text], live.device)[0].cpu(), None, req.k  # (384,)
        cue, mask = parse_cue(record, settings, req.vector, req.image, req.mask, registry.budget)
        return "pattern", cue, mask, req.k

    # Parsing (and the caption's embedding) runs on a worker thread; the memory call is
    # batched with the memory's other concurrent recalls, and the answer built on its thread.
    what, cue, mask, k = await run_sync(query)
    batcher, storage = service.batcher, registry.storage
    if what == "text":
        body = await batcher.lookup_text(
            live, cue, k, lambda found: _by_text(live, found, storage).model_dump_json().encode()
        )
    else:
        body = await batcher.lookup_captions(
            live, (cue, mask), k, lambda found: _by_pattern(live, found, storage).model_dump_json().encode()
        )
    service.metrics.recalls.labels(live.kind, "lookup").inc()
    return json_bytes_response(body)
