"""Recall: retrieve from a corrupted cue; complete a partial image."""

from __future__ import annotations

import base64
import json

import torch
from fastapi import APIRouter, Request, Response

from memory_core import EmptyMemoryError
from memory_core.masks import pixel_mask_to_vector

from ..codec import (
    b64decode,
    check_known,
    cue_image,
    is_image,
    list_mask,
    parse_json,
    picture_mask,
    png_base64,
    png_bytes,
    vector_tensor,
)
from ..errors import ApiError
from ..kinds import LiveMemory, NotTrained, Recall
from ..schemas import CompleteRequest, CompleteResult, Match, RecalledPattern, RetrieveRequest, RetrieveResult
from ..service import Service
from ..settings import Settings
from .deps import READ, READ_ERRORS, RegistryDep, ServiceDep, errors, run_sync, wants_png
from .memories import NameParam
from .patterns import body_kind, read_form

router = APIRouter(prefix="/v1/memories", tags=["recall"])

_MULTIPART_COMPLETE = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {
            "type": "string",
            "format": "binary",
            "description": "the partial picture (PNG/JPEG; RGBA: alpha 0 = unknown pixel)",
        },
        "mask": {
            "type": "string",
            "format": "binary",
            "description": "mask picture: white = known, black = to fill",
        },
        "k": {"type": "integer", "minimum": 1, "description": "how many stored matches to name"},
    },
}
COMPLETE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CompleteRequest"}},
            "multipart/form-data": {"schema": _MULTIPART_COMPLETE},
        },
    }
}


def _check_limits(k: int, steps: int, settings: Settings) -> None:
    if k > settings.max_k:
        raise ApiError(422, "k_too_large", f"k = {k} is over AMS_MAX_K = {settings.max_k}")
    if steps > settings.max_steps:
        raise ApiError(
            422, "steps_too_large", f"steps = {steps} is over AMS_MAX_STEPS = {settings.max_steps}"
        )


async def _recall(
    service: Service, live: LiveMemory, cue: torch.Tensor, mask: torch.Tensor | None, k: int, steps: int
) -> Recall:
    """One recall through the memory's micro-batcher; the memory's state errors as 409."""
    try:
        return await service.batcher.recall(live, cue, mask, k, steps)
    except EmptyMemoryError as exc:
        raise ApiError(409, "memory_empty", str(exc)) from None
    except NotTrained as exc:
        raise ApiError(409, "not_trained", str(exc)) from None


def _matches(rec: Recall) -> list[Match]:
    return [Match(id=i, score=s) for i, s in rec.matches]


@router.post(
    "/{name}/retrieve",
    response_model=RetrieveResult,
    dependencies=READ,
    responses=errors(400, 404, 409, 413, 422, *READ_ERRORS),
)
async def retrieve(
    body: RetrieveRequest, registry: RegistryDep, service: ServiceDep, name: str = NameParam
) -> RetrieveResult:
    """Recall a stored pattern from a corrupted cue: a `vector` (D numbers) or an `image` (base64;
    fitted to the memory's shape). `mask` says which entries are known (True); an RGBA image's
    alpha 0 marks unknown pixels. The answer names the stored patterns nearest the result
    (`matches`, best first) and the result's `energy`."""
    settings = service.settings
    _check_limits(body.k, body.steps, settings)
    live = registry.get(name)
    record = live.record

    def cue() -> tuple[torch.Tensor, torch.Tensor | None]:
        if (body.vector is None) == (body.image is None):
            raise ApiError(422, "invalid_cue", "give exactly one of 'vector' or 'image'")
        alpha = None
        if body.image is not None:
            if not is_image(record):
                raise ApiError(422, "not_an_image_memory", f"memory {name!r} stores vectors: send 'vector'")
            cue, alpha = cue_image(
                b64decode(body.image, "image"), record.shape, settings.max_image_pixels, "image"
            )
        else:
            cue = vector_tensor(body.vector, record.dim, "vector")
        if isinstance(body.mask, list):
            mask = list_mask(body.mask, record)
        elif isinstance(body.mask, str):
            mask = picture_mask(b64decode(body.mask, "mask"), record, settings.max_image_pixels, "mask")
        elif alpha is not None:
            mask = check_known(pixel_mask_to_vector(alpha, record.shape[0]), "the image's alpha")
        else:
            mask = None
        return cue, mask

    def answer(rec: Recall) -> RetrieveResult:
        if is_image(record):
            pattern = RecalledPattern(
                image=png_base64(rec.output.clamp(0, 1), record.shape),
                vector=rec.output.tolist() if body.include_vector else None,
            )
        else:
            pattern = RecalledPattern(vector=rec.output.tolist())
        return RetrieveResult(
            pattern=pattern,
            matches=_matches(rec),
            energy=rec.energy,
            state=rec.state,
            trained_count=rec.trained_count,
        )

    # Decoding and encoding run on worker threads, one request each; the recall itself
    # is batched with the memory's other concurrent recalls.
    cue_t, mask = await run_sync(cue)
    rec = await _recall(service, live, cue_t, mask, body.k, body.steps)
    service.metrics.recalls.labels(live.kind, "retrieve").inc()
    return await run_sync(answer, rec)


@router.post(
    "/{name}/complete",
    response_model=CompleteResult,
    dependencies=READ,
    openapi_extra=COMPLETE_BODY,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the completed picture; raw PNG with `Accept: image/png` (matches and "
            "energy then in the X-AMS-Matches and X-AMS-Energy headers)",
        },
        **errors(400, 404, 409, 413, 415, 422, *READ_ERRORS),
    },
)
async def complete(
    request: Request, registry: RegistryDep, service: ServiceDep, name: str = NameParam
) -> CompleteResult | Response:
    """Complete a partial image: multipart `image` + optional `mask` picture (white = known), or
    an RGBA `image` whose alpha 0 marks the unknown pixels; or JSON with base64 pictures. Known
    pixels are kept as given and the unknown ones filled from memory. Answers JSON with a base64
    PNG, or the PNG itself with `Accept: image/png`."""
    settings = service.settings
    live = registry.get(name)
    record = live.record
    if not is_image(record):
        raise ApiError(
            422, "not_an_image_memory", f"memory {name!r} stores vectors; complete works on pictures"
        )
    png = wants_png(request)
    if body_kind(request) == "multipart":
        fields = await read_form(request, 2)
        image, mask_data, k = _complete_fields(fields)
        body = None
    else:
        body = await request.body()
        image = mask_data = None
        k = 3

    def cue() -> tuple[torch.Tensor, torch.Tensor, int]:
        nonlocal image, mask_data, k
        if body is not None:
            req = parse_json(body, CompleteRequest)
            image = b64decode(req.image, "image")
            mask_data = None if req.mask is None else b64decode(req.mask, "mask")
            k = req.k
        _check_limits(k, 1, settings)
        cue, alpha = cue_image(image, record.shape, settings.max_image_pixels, "image")  # (D,), (H, W) | None
        if mask_data is not None:
            mask = picture_mask(mask_data, record, settings.max_image_pixels, "mask")  # (D,)
        elif alpha is not None:
            mask = check_known(pixel_mask_to_vector(alpha, record.shape[0]), "the image's alpha")
        else:
            raise ApiError(
                422,
                "mask_required",
                "say which pixels to fill: a 'mask' picture (black = to fill) "
                "or an RGBA image whose alpha 0 marks them",
            )
        return cue, mask, k

    def answer(cue: torch.Tensor, mask: torch.Tensor, rec: Recall) -> tuple[CompleteResult, bytes]:
        filled = torch.where(mask, cue, rec.output.clamp(0, 1))  # (D,): known pixels as given
        picture = png_bytes(filled, record.shape)
        result = CompleteResult(
            image=base64.b64encode(picture).decode("ascii"),
            matches=_matches(rec),
            energy=rec.energy,
            state=rec.state,
            trained_count=rec.trained_count,
            unknown_pixels=int((~mask).sum()) // record.shape[0],
        )
        return result, picture

    cue_t, mask, k = await run_sync(cue)
    rec = await _recall(service, live, cue_t, mask, k, 1)
    service.metrics.recalls.labels(live.kind, "complete").inc()
    result, picture = await run_sync(answer, cue_t, mask, rec)
    if png:
        headers = {
            "X-AMS-Matches": json.dumps([m.model_dump() for m in result.matches], separators=(",", ":")),
            "X-AMS-Energy": repr(result.energy),
            "X-AMS-State": result.state,
            "X-AMS-Trained-Count": str(result.trained_count),
            "X-AMS-Unknown-Pixels": str(result.unknown_pixels),
        }
        return Response(picture, media_type="image/png", headers=headers)
    return result


def _complete_fields(fields: dict[str, list]) -> tuple[bytes, bytes | None, int]:
    images, masks, ks = fields.get("image", []), fields.get("mask", []), fields.get("k", [])
    if len(images) != 1 or not isinstance(images[0], bytes):
        raise ApiError(422, "invalid_multipart", "complete needs exactly one file in field 'image'")
    if len(masks) > 1 or (masks and not isinstance(masks[0], bytes)):
        raise ApiError(422, "invalid_multipart", "field 'mask' must be one file")
    k = 3
    if ks:
        try:
            k = int(ks[0])
        except (TypeError, ValueError):
            raise ApiError(422, "validation_error", "field 'k' must be an integer") from None
        if k < 1:
            raise ApiError(422, "validation_error", "field 'k' must be >= 1")
    return images[0], masks[0] if masks else None, k
