"""Recall: retrieve from a corrupted cue; complete a partial image."""

from __future__ import annotations

import base64
import json

import torch
from fastapi import APIRouter, Request, Response

from memory_core import EmptyMemoryError

from ..codec import b64decode, is_image, parse_cue, parse_json, picture_cue, png_base64, png_bytes
from ..errors import ApiError
from ..kinds import LiveMemory, NotTrained, Recall
from ..schemas import CompleteRequest, CompleteResult, Match, RecalledPattern, RetrieveRequest, RetrieveResult
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


def _recall(live: LiveMemory, cue: torch.Tensor, mask: torch.Tensor | None, k: int, steps: int) -> Recall:
    try:
        return live.recall(cue, mask, k, steps)
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

    def work() -> RetrieveResult:
        cue, mask = parse_cue(record, settings, body.vector, body.image, body.mask)
        rec = _recall(live, cue, mask, body.k, body.steps)
        service.metrics.recalls.labels(live.kind, "retrieve").inc()
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

    return await run_sync(work)


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
        image, mask_data, k = image_form(fields, "complete", default_k=3)
        body = None
    else:
        body = await request.body()
        image = mask_data = None
        k = 3

    def work() -> tuple[CompleteResult, bytes]:
        nonlocal image, mask_data, k
        if body is not None:
            req = parse_json(body, CompleteRequest)
            image = b64decode(req.image, "image")
            mask_data = None if req.mask is None else b64decode(req.mask, "mask")
            k = req.k
        _check_limits(k, 1, settings)
        cue, mask = picture_cue(record, settings, image, mask_data)  # (D,), (D,) | None
        if mask is None:
            raise ApiError(
                422,
                "mask_required",
                "say which pixels to fill: a 'mask' picture (black = to fill) "
                "or an RGBA image whose alpha 0 marks them",
            )
        rec = _recall(live, cue, mask, k, 1)
        service.metrics.recalls.labels(live.kind, "complete").inc()
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

    result, picture = await run_sync(work)
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


def image_form(fields: dict[str, list], endpoint: str, default_k: int) -> tuple[bytes, bytes | None, int]:
    """Multipart fields of a picture query: (image bytes, mask bytes or None, k)."""
    images, masks, ks = fields.get("image", []), fields.get("mask", []), fields.get("k", [])
    if len(images) != 1 or not isinstance(images[0], bytes):
        raise ApiError(422, "invalid_multipart", f"{endpoint} needs exactly one file in field 'image'")
    if len(masks) > 1 or (masks and not isinstance(masks[0], bytes)):
        raise ApiError(422, "invalid_multipart", "field 'mask' must be one file")
    k = default_k
    if ks:
        try:
            k = int(ks[0])
        except (TypeError, ValueError):
            raise ApiError(422, "validation_error", "field 'k' must be an integer") from None
        if k < 1:
            raise ApiError(422, "validation_error", "field 'k' must be >= 1")
    return images[0], masks[0] if masks else None, k
