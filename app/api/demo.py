"""Demo memories: list the presets, create one preloaded from bundled offline data.

``POST /v1/demo`` creates the memory at once (201-style checks: name taken, kind,
config) and loads its patterns as a background job of kind ``demo`` (202), so the
demo page can show progress from ``/v1/jobs/{id}`` like a training job's. The load
stores in batches through the service's own store path; if it fails or is cancelled,
the half-loaded memory is deleted.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..codec import prepare_patterns
from ..exceptions import ApiError, JobRunning, MemoryNotFound, WrongKind
from ..gate import body_limit
from ..jobs import JobContext
from ..kinds import LiveMemory, RelationalKind
from ..presets import PRESETS, Preset
from ..registry import Registry
from ..schemas import NAME_PATTERN, Job, MemoryDetails
from ..service import Service
from .deps import (
    READ,
    READ_ERRORS,
    SMALL_BODY,
    WRITE,
    WRITE_ERRORS,
    RegistryDep,
    ServiceDep,
    errors,
    run_sync,
)
from .memories import memory_details

router = APIRouter(prefix="/v1/demo", tags=["demo"])

# A load is split into about this many store batches, so that its job reports progress.
_STEPS = 10


class DemoPreset(BaseModel):
    name: str = Field(description="the preset's name, for POST /v1/demo")
    title: str
    description: str
    kind: str = Field(description="the memory's kind by default; a relational preset (facts) takes no other")
    shape: list[int] = Field(description="the memory's shape [C, H, W]; [] for a relational preset")
    text: bool = Field(description="a text memory: each pattern carries a caption")
    default_count: int = Field(description="patterns loaded when `count` is not given")
    max_count: int = Field(description="the most patterns the preset holds")
    memory_name: str = Field(description="the memory's name when `name` is not given")


class DemoPresetList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "presets": [
                        {
                            "name": "fashion",
                            "title": "Fashion-MNIST",
                            "description": "Fashion-MNIST test images (28x28 grey)",
                            "kind": "hopfield",
                            "shape": [1, 28, 28],
                            "text": False,
                            "default_count": 500,
                            "max_count": 10000,
                            "memory_name": "demo-fashion",
                        }
                    ]
                }
            ]
        }
    )
    presets: list[DemoPreset]


class DemoRequest(BaseModel):
    """Which preset to load, into a memory of which name and kind."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"preset": "fashion"},
                {"preset": "photos"},
                {"preset": "fashion", "name": "fashion-small", "kind": "hopfield", "count": 100},
                {"preset": "europe"},
            ]
        },
    )
    preset: str = Field(
        description="a preset from GET /v1/demo: fashion, photos, europe or nations", examples=["fashion"]
    )
    name: str | None = Field(
        None, pattern=NAME_PATTERN, description="the memory's name; default demo-<preset>"
    )
    kind: str | None = Field(None, description="the memory's kind (see /v1/info kinds); default the preset's")
    count: int | None = Field(None, ge=1, description="patterns to load; default the preset's default_count")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="the kind's config over the preset's (e.g. a knowledge base's rules)",
    )


class DemoStarted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "memory": {
                        "name": "demo-fashion",
                        "kind": "hopfield",
                        "shape": [1, 28, 28],
                        "dim": 784,
                        "text": False,
                        "config": {"similarity": "euclidean", "separation": "softmax", "beta": 100.0},
                        "count": 0,
                        "state": "ready",
                        "trained_count": 0,
                        "created_at": "2025-01-01T12:00:00Z",
                    },
                    "job": {
                        "id": "3f2a9c0e5b7d4c1a",
                        "memory": "demo-fashion",
                        "kind": "demo",
                        "status": "queued",
                        "progress": 0.0,
                        "epoch": 0,
                        "epochs": 11,
                        "energy": None,
                        "eta_seconds": None,
                        "patterns": 500,
                        "created_at": "2025-01-01T12:00:00Z",
                        "started_at": None,
                        "finished_at": None,
                        "error": None,
                        "stop_reason": None,
                    },
                }
            ]
        }
    )
    memory: MemoryDetails = Field(description="the new memory, still empty")
    job: Job = Field(description="the load: follow it at /v1/jobs/{id}; epoch counts batches stored")


def _preset_out(p: Preset) -> DemoPreset:
    return DemoPreset(
        name=p.name,
        title=p.title,
        description=p.description,
        kind=p.kind,
        shape=list(p.shape),
        text=p.text,
        default_count=p.default_count,
        max_count=p.max_count,
        memory_name=p.memory_name,
    )


@router.get("", response_model=DemoPresetList, dependencies=READ, responses=errors(*READ_ERRORS))
async def list_presets() -> DemoPresetList:
    """The demo presets: memories that POST /v1/demo preloads from the bundled offline data."""
    return DemoPresetList(presets=[_preset_out(p) for p in PRESETS.values()])


@router.post(
    "",
    status_code=202,
    response_model=DemoStarted,
    dependencies=WRITE,
    responses=errors(400, 409, 413, 422, 501, *WRITE_ERRORS),
)
@body_limit(SMALL_BODY)
async def create_demo(body: DemoRequest, registry: RegistryDep, service: ServiceDep) -> DemoStarted:
    """Create a memory preloaded from a preset: `fashion` (Fashion-MNIST, [1, 28, 28]),
    `photos` (69 captioned photo crops, [3, 64, 64], a text memory), or the knowledge bases
    `europe` (bundled) and `nations` (where PyKEEN is installed), kind relational. The memory is
    created at once (409 if the name is taken) and its patterns (facts) are loaded by a
    background job (202): follow it at `/v1/jobs/{id}`. A load that fails or is cancelled
    deletes the memory. Memories that train (pc, pcgraph, relational) are left untrained."""
    preset = PRESETS.get(body.preset)
    if preset is None:
        raise ApiError(
            422, "unknown_preset", f"unknown preset {body.preset!r}; there are: {', '.join(PRESETS)}"
        )
    count = body.count or preset.default_count
    if count > preset.max_count:
        raise ApiError(
            422, "count_too_large", f"preset {preset.name!r} holds {preset.max_count} patterns, not {count}"
        )
    name = body.name or preset.memory_name
    kind = body.kind or preset.kind
    if (kind == "relational") != (preset.kind == "relational"):
        what = "a knowledge base: its memory is relational" if preset.kind == "relational" else "patterns"
        raise WrongKind(f"preset {preset.name!r} is {what}, not kind {kind!r}")

    def work() -> DemoStarted:
        preset.check()  # DatasetUnavailable: 501
        shape = list(preset.shape) or None
        live = registry.create(name, kind, shape, preset.text, {**preset.config, **body.config})
        created = memory_details(live)  # as created: the load may store its first batch before we answer
        try:
            job = _start_load(registry, service, live, preset, count)
        except BaseException:
            registry.delete(name)  # never leave an empty demo memory without its load
            raise
        return DemoStarted(memory=created, job=Job(**job))

    return await run_sync(work)


def _start_load(
    registry: Registry, service: Service, live: LiveMemory, preset: Preset, count: int
) -> dict[str, Any]:
    """Submit the job that loads ``count`` patterns of ``preset`` into ``live``; its state."""
    settings = service.settings
    batch = max(1, min(settings.max_batch, math.ceil(count / _STEPS)))
    steps = 1 + math.ceil(count / batch)  # reading the data, then one step per stored batch

    def load(ctx: JobContext) -> None:
        raw = preset.load(count)
        if not ctx.report(1, steps):
            return
        for step, start in enumerate(range(0, count, batch), start=2):
            part = raw[start : start + batch]
            if isinstance(live, RelationalKind):
                live.store_facts(registry.storage, part)
            else:
                with registry.storing(live, len(part)):
                    patterns, vectors = prepare_patterns(part, live.record, settings, budget=registry.budget)
                    registry.store(live, patterns, vectors)
                service.metrics.patterns_stored.labels(live.kind).inc(len(patterns))
            if not ctx.report(step, steps):
                return

    def on_finish(status: str) -> None:
        if status == "succeeded":
            return
        try:
            if registry.get(live.name) is live:  # not one of the same name made since
                registry.delete(live.name)
        except MemoryNotFound:  # deleted meanwhile
            pass

    try:
        job = registry.jobs.submit(
            live.name,
            "demo",
            load,
            patterns=count,
            epochs=steps,
            on_finish=on_finish,
            key=registry.job_key(live),
        )
    except JobRunning as exc:  # only if someone started a job on the brand-new memory
        raise JobRunning(f"memory {live.name!r} has a job already", exc.job_id) from None
    return job.to_dict()
