"""Recall: retrieve from a corrupted cue; complete a partial image."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TypeVar

import torch
from fastapi import APIRouter, Request, Response

from ..batching import Cue
from ..codec import b64decode, cue_values, is_image, parse_cue, parse_json, picture_cue, png_base64, png_bytes
from ..exceptions import ApiError
from ..jsonbody import check_values
from ..kinds import LiveMemory, Recall, pattern_memory
from ..registry import Registry
from ..schemas import CompleteRequest, CompleteResult, Match, RecalledPattern, RetrieveRequest, RetrieveResult
from ..service import Service
from .deps import READ, READ_ERRORS, RegistryDep, ServiceDep, errors, json_bytes_response, wants_png
from .params import (
    NameParam,
    body_kind,
    check_limits,
    form_bool,
    form_int,
    image_form,
    picture_form_schema,
    read_form,
    recall_limits,
)

router = APIRouter(prefix="/v1/memories", tags=["recall"])

T = TypeVar("T")

_MULTIPART_COMPLETE = picture_form_schema(
    "the partial picture (PNG/JPEG; RGBA: alpha 0 = unknown pixel)", "how many stored matches to name"
)
COMPLETE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CompleteRequest"}},
            "multipart/form-data": {"schema": _MULTIPART_COMPLETE},
        },
    }
}


async def _recall(
    service: Service,
    live: LiveMemory,
    cue: Callable[[], Cue | tuple[torch.Tensor, torch.Tensor | None, int, int]],
    k: int,
    steps: int,
    finish: Callable[[Recall], T],
) -> T:
    """One recall through the memory's micro-batcher: ``cue`` (decoding the request's cue)
    and ``finish`` (the response from the recall) run on the batch's worker thread."""
    return await service.batcher.recall(live, cue, k, steps, finish)


def _matches(rec: Recall) -> list[Match]:
    return [Match(id=i, score=s) for i, s in rec.matches]


_MULTIPART_RETRIEVE = picture_form_schema(
    "the cue picture (PNG/JPEG, fitted to the memory's shape; RGBA: alpha 0 = unknown)",
    "how many stored matches to name",
    steps={"type": "integer", "minimum": 1, "description": "iterated retrieval steps (hopfield)"},
    include_vector={
        "type": "boolean",
        "description": "also return the result as a vector (`true` or `false`)",
    },
)
RETRIEVE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/RetrieveRequest"}},
            "multipart/form-data": {"schema": _MULTIPART_RETRIEVE},
        },
    }
}
# Multipart retrieve: the text fields beside `image` and `mask` (k is image_form's).
_RETRIEVE_OPTIONS = ("steps", "include_vector")


@router.post(
    "/{name}/retrieve",
    response_model=RetrieveResult,
    dependencies=READ,
    openapi_extra=RETRIEVE_BODY,
    responses=errors(400, 404, 409, 413, 415, 422, *READ_ERRORS),
)
@recall_limits
async def retrieve(
    request: Request, registry: RegistryDep, service: ServiceDep, name: str = NameParam
) -> Response:
    """Recall a stored pattern from a corrupted cue: a `vector` (D numbers) or an `image` (base64;
    fitted to the memory's shape). `mask` says which entries are known (True); an RGBA image's
    alpha 0 marks unknown pixels. Or multipart, as complete takes it: an `image` file, an
    optional `mask` picture (white = known) and the text fields `k`, `steps`, `include_vector`.
    The answer names the stored patterns nearest the result (`matches`, best first) and the
    result's `energy`."""
    return await retrieve_response(request, service, registry, name)


async def retrieve_response(request: Request, service: Service, registry: Registry, name: str) -> Response:
    """The retrieve endpoint once the API key is checked and the registry is ready (shared by
    the route above and the fast path, app/fastpath.py)."""
    settings = service.settings
    multipart = body_kind(request) == "multipart"
    live = pattern_memory(registry.get(name), "retrieve")
    record = live.record
    if multipart and not is_image(record):
        raise ApiError(
            422, "not_an_image_memory", f"memory {name!r} stores vectors: send JSON with a 'vector'"
        )
    form = await read_form(request, 2) if multipart else None
    body = None if multipart else await request.body()
    include_vector: list[bool] = []  # the request's option, once the batch's thread has parsed it

    # Batched with the memory's other concurrent recalls (app/batching.py): the body is
    # parsed, its cue decoded, recalled from and answered (serialised) on the batch's worker
    # thread. (Parsing 784 numbers of JSON was the event loop's largest single cost under load.)
    def cue() -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
        if form is not None:
            image, mask_data, k = image_form(form, "retrieve", default_k=3, options=_RETRIEVE_OPTIONS)
            steps = form_int(form, "steps", 1)
            check_limits(k, steps, settings)
            include_vector.append(form_bool(form, "include_vector", False))
            cue, mask = picture_cue(record, settings, image, mask_data, registry.budget)
            return cue, mask, k, steps
        check_values(body, cue_values(record, settings), f"a recall of memory {name!r} (D = {record.dim})")
        req = parse_json(body, RetrieveRequest)
        check_limits(req.k, req.steps, settings)
        include_vector.append(req.include_vector)
        cue, mask = parse_cue(record, settings, req.vector, req.image, req.mask, registry.budget)
        return cue, mask, req.k, req.steps

    def answer(rec: Recall) -> bytes:
        if is_image(record):
            pattern = RecalledPattern(
                image=png_base64(rec.output.clamp(0, 1), record.shape),
                vector=rec.output.tolist() if include_vector[0] else None,
            )
        else:
            pattern = RecalledPattern(vector=rec.output.tolist())
        return (
            RetrieveResult(
                pattern=pattern,
                matches=_matches(rec),
                energy=rec.energy,
                state=rec.state,
                trained_count=rec.trained_count,
                recall=rec.report,
            )
            .model_dump_json()
            .encode()
        )

    result = await _recall(service, live, cue, 1, 1, answer)  # k, steps: from the body
    service.metrics.recalls.labels(live.kind, "retrieve").inc()
    return json_bytes_response(result)


@router.post(
    "/{name}/complete",
    response_model=CompleteResult,
    dependencies=READ,
    openapi_extra=COMPLETE_BODY,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the completed picture; raw PNG with `Accept: image/png` (matches, energy "
            "and, for kind pc, the recall report then in the X-AMS-Matches, X-AMS-Energy and X-AMS-Recall "
            "headers)",
        },
        **errors(400, 404, 409, 413, 415, 422, *READ_ERRORS),
    },
)
@recall_limits
async def complete(
    request: Request, registry: RegistryDep, service: ServiceDep, name: str = NameParam
) -> Response:
    """Complete a partial image: multipart `image` + optional `mask` picture (white = known), or
    an RGBA `image` whose alpha 0 marks the unknown pixels; or JSON with base64 pictures. Known
    pixels are kept as given and the unknown ones filled from memory. Answers JSON with a base64
    PNG, or the PNG itself with `Accept: image/png`."""
    return await complete_response(request, service, registry, name)


async def complete_response(request: Request, service: Service, registry: Registry, name: str) -> Response:
    """The complete endpoint once the API key is checked and the registry is ready (shared by
    the route above and the fast path, app/fastpath.py)."""
    settings = service.settings
    live = pattern_memory(registry.get(name), "complete")
    record = live.record
    if not is_image(record):
        raise ApiError(
            422, "not_an_image_memory", f"memory {name!r} stores vectors; complete works on pictures"
        )
    png = wants_png(request)
    if body_kind(request) == "multipart":
        fields = await read_form(request, 2)
        image, mask_data, k = image_form(fields, "complete", default_k=3)
        body = None
    else:
        body = await request.body()
        image = mask_data = None
        k = 3
    known: list[torch.Tensor] = []  # the cue and its mask, once the batch's thread has decoded them

    # Decoded, recalled and answered on the batch's worker thread, as for retrieve.
    def cue_of() -> tuple[torch.Tensor, torch.Tensor, int, int]:
        nonlocal image, mask_data, k
        if body is not None:
            check_values(body, cue_values(record, settings), f"a completion in memory {name!r}")
            req = parse_json(body, CompleteRequest)
            image = b64decode(req.image, "image")
            mask_data = None if req.mask is None else b64decode(req.mask, "mask")
            k = req.k
        check_limits(k, 1, settings)
        cue, mask = picture_cue(record, settings, image, mask_data, registry.budget)  # (D,), (D,) | None
        if mask is None:
            raise ApiError(
                422,
                "mask_required",
                "say which pixels to fill: a 'mask' picture (black = to fill) "
                "or an RGBA image whose alpha 0 marks them",
            )
        known.extend((cue, mask))
        return cue, mask, k, 1

    def answer(rec: Recall) -> Response:
        cue, mask = known
        filled = torch.where(mask, cue, rec.output.clamp(0, 1))  # (D,): known pixels as given
        picture = png_bytes(filled, record.shape)
        result = CompleteResult(
            image=base64.b64encode(picture).decode("ascii"),
            matches=_matches(rec),
            energy=rec.energy,
            state=rec.state,
            trained_count=rec.trained_count,
            unknown_pixels=int((~mask).sum()) // record.shape[0],
            recall=rec.report,
        )
        if not png:
            return json_bytes_response(result.model_dump_json().encode())
        headers = {
            "X-AMS-Matches": json.dumps([m.model_dump() for m in result.matches], separators=(",", ":")),
            "X-AMS-Energy": repr(result.energy),
            "X-AMS-State": result.state,
            "X-AMS-Trained-Count": str(result.trained_count),
            "X-AMS-Unknown-Pixels": str(result.unknown_pixels),
        }
        if result.recall is not None:  # kind pc: what the recall did, as in the JSON answer
            headers["X-AMS-Recall"] = result.recall.model_dump_json()
        return Response(picture, media_type="image/png", headers=headers)

    response = await _recall(service, live, cue_of, 1, 1, answer)  # k: from the body
    service.metrics.recalls.labels(live.kind, "complete").inc()
    return response
