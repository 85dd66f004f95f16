"""Every call of the service's REST API v1 as an operation (a generator, see ``_core``).

``Client`` and ``AsyncClient`` expose each of these under the same name, blocking or
awaitable; the docstrings here are theirs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
from tqdm.auto import tqdm

from ._core import Op, Sleep, json_body, operation, path
from ._facts import FactOperations
from .codec import b64, count_of, cue_fields, mask_field, mask_picture, pattern_items, picture_bytes
from .errors import ApiError, JobFailed, NetworkError, Unavailable
from .models import (
    CompleteResult,
    DemoPreset,
    Info,
    JobState,
    LookupResult,
    Match,
    Memory,
    Pattern,
    RetrieveResult,
    StoreResult,
)

MEMORY = "/v1/memories/{name}"
PATTERNS = "/v1/memories/{name}/patterns"
PATTERN = "/v1/memories/{name}/patterns/{pattern_id}"
JOB = "/v1/jobs/{job_id}"


def _shape(shape: int | Sequence[int]) -> list[int]:
    return [int(shape)] if isinstance(shape, int) else [int(s) for s in shape]


def _stored(answers: list[dict[str, Any]]) -> StoreResult:
    return StoreResult(ids=[i for a in answers for i in a["ids"]], count=answers[-1]["count"])


class Operations(FactOperations):
    """The service's operations; see ``Client`` for how to make one."""

    def _make_job(self, state: JobState) -> Any:  # Job or AsyncJob
        raise NotImplementedError

    # --- health and info ------------------------------------------------------------------
    @operation("GET /livez")
    def live(self) -> Op[bool]:
        """True when the service's process answers (``GET /livez``); NetworkError when not reachable."""
        response = yield from self._call("GET", "/livez", retry=False)
        return response.status_code == 200

    @operation("GET /readyz")
    def ready(self) -> Op[bool]:
        """True when the service is ready (storage recovered, every memory loaded); False
        while it answers 503 (``GET /readyz``, not retried)."""
        try:
            yield from self._call("GET", "/readyz", retry=False)
        except Unavailable:
            return False
        return True

    @operation("GET /readyz")
    def wait_ready(self, timeout: float = 60.0, interval: float = 0.25) -> Op[None]:
        """Wait until the service is ready (it may still be starting: network errors are
        waited out too); raises ``Unavailable`` (or the last ``NetworkError``) after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (yield from Operations.ready(self)):
                    return
                last: ApiError = Unavailable(f"{self.url} not ready after {timeout} s", code="not_ready")
            except NetworkError as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise last
            yield Sleep(interval)

    @operation("GET /metrics")
    def metrics(self) -> Op[str]:
        """The Prometheus metrics as text (``GET /metrics``)."""
        response = yield from self._call("GET", "/metrics", headers={"Accept": "text/plain"})
        return response.text

    @operation("GET /v1/info")
    def info(self) -> Op[Info]:
        """Version, device, kinds, similarities, separations, default configs, limits, auth."""
        info = Info.from_json((yield from self._json("GET", "/v1/info")))
        self._limits = info.limits
        return info

    # --- memories -------------------------------------------------------------------------
    @operation("POST /v1/memories")
    def create_memory(
        self,
        name: str,
        shape: int | Sequence[int] | None = None,
        kind: str = "hopfield",
        text: bool = False,
        config: dict[str, Any] | None = None,
    ) -> Op[Memory]:
        """Create a memory.

        Args:
            name: letters, digits, ``_ . -``; up to 64.
            shape: ``(C, H, W)`` (C = 1 or 3) for pictures, ``D`` or ``(D,)`` for vectors;
                None for a relational memory (it stores facts, not patterns).
            kind: ``hopfield`` (learns at store), ``pc`` or ``pcgraph`` (trained by ``train``),
                ``relational`` (facts: ``store_facts``, ``train``, ``query``); ``info().kinds``.
            text: a cross-modal memory, each pattern with a caption (``lookup``).
            config: the kind's constructor arguments; None = the measured defaults
                (``info().default_configs``).
        Raises:
            Conflict (``memory_exists``), ValidationError (``invalid_shape``, ``invalid_config``, ...).
        """
        body: dict[str, Any] = {"name": name, "kind": kind, "text": text, "config": config or {}}
        if shape is not None:
            body["shape"] = _shape(shape)
        return Memory.from_json((yield from self._json("POST", "/v1/memories", body)))

    @operation("GET /v1/memories/{name}")
    def get_memory(self, name: str) -> Op[Memory]:
        """A memory's kind, shape, config, count, state and trained count; NotFound if none."""
        return Memory.from_json((yield from self._json("GET", path(MEMORY, name=name))))

    @operation("GET /v1/memories")
    def list_memories(self) -> Op[list[Memory]]:
        """Every memory, in creation order."""
        data = yield from self._json("GET", "/v1/memories")
        return [Memory.from_json(m) for m in data["memories"]]

    @operation("DELETE /v1/memories/{name}")
    def delete_memory(self, name: str) -> Op[None]:
        """Delete a memory with all its patterns and checkpoints (its running job is cancelled)."""
        yield from self._call("DELETE", path(MEMORY, name=name))

    # --- patterns -------------------------------------------------------------------------
    @operation("POST /v1/memories/{name}/patterns", "GET /v1/info")
    def store(
        self,
        name: str,
        patterns: Any,
        ids: Sequence[str] | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        *,
        fit: bool = False,
        progress: bool | None = None,
    ) -> Op[StoreResult]:
        """Store patterns, in as many requests as the service's limits need.

        Args:
            patterns: an array or tensor (a batch: first axis = patterns, the rest C-major,
                numbers as given), a ``.npy`` file of one, or a picture (PIL image, PNG/JPEG
                path or bytes), or a list of pictures and single patterns (arrays or lists
                of numbers).
            ids: one id per pattern (letters, digits, ``_ . : -``); None = generated.
            texts: one caption per pattern (text memories need them).
            metadata: one JSON object (or None) per pattern.
            fit: centre-crop and resize pictures of another size (else 422 ``shape_mismatch``).
            progress: a tqdm bar; None = on a terminal, once an upload takes a second request.
        Returns:
            The ids in input order and the memory's count after. Each request is stored
            whole or not at all, durably before it is answered; requests go in order.
        Raises:
            ValueError for inputs that cannot be sent (NaN, counts of ids/texts/metadata
            that differ from the patterns'); an ApiError of a later request carries the
            patterns stored before it in ``exc.stored`` (a StoreResult).
        """
        return (
            yield from self._upload(
                path(PATTERNS, name=name),
                "patterns",
                pattern_items(patterns, ids, texts, metadata),
                _stored,
                params={"fit": "true"} if fit else None,
                total=count_of(patterns),
                unit="pattern",
                desc=f"store {name}",
                progress=progress,
            )
        )

    @operation("GET /v1/memories/{name}/patterns/{pattern_id}")
    def get_pattern(self, name: str, pattern_id: str) -> Op[Pattern]:
        """One stored pattern: ``vector`` (vector memories) or ``image`` (PIL; 8-bit, as the
        service sends pictures), ``array`` either way, with its caption and metadata."""
        return Pattern.from_json(
            (yield from self._json("GET", path(PATTERN, name=name, pattern_id=pattern_id)))
        )

    @operation("DELETE /v1/memories/{name}/patterns/{pattern_id}")
    def delete_pattern(self, name: str, pattern_id: str) -> Op[None]:
        """Delete one pattern (durable on return); NotFound (``pattern_not_found``) if none."""
        yield from self._call("DELETE", path(PATTERN, name=name, pattern_id=pattern_id))

    # --- recall ---------------------------------------------------------------------------
    @operation("POST /v1/memories/{name}/retrieve")
    def retrieve(
        self, name: str, cue: Any, mask: Any = None, k: int = 3, steps: int = 1, include_vector: bool = False
    ) -> Op[RetrieveResult]:
        """Recall a stored pattern from a noisy or partial cue.

        Args:
            cue: an array or tensor (D numbers, or the memory's shape; sent exactly) or a
                picture (PIL, path, bytes; fitted to the memory's shape by the service; an
                RGBA picture's alpha 0 marks unknown pixels).
            mask: which entries are known (True): booleans of D or H*W entries (any shape),
                or a mask picture (white = known). None = all known (or the alpha's).
            k: how many stored matches to name, best first.
            steps: iterated retrieval steps (hopfield).
            include_vector: image memories: also return the result as exact numbers
                (``result.array`` then uses them instead of the 8-bit picture).
        """
        body: dict[str, Any] = {**cue_fields(cue), "k": k, "steps": steps}
        if mask is not None:
            body["mask"] = mask_field(mask)
        if include_vector:
            body["include_vector"] = True
        data = yield from self._json("POST", path(MEMORY + "/retrieve", name=name), body, idempotent=True)
        return RetrieveResult.from_json(data)

    @operation("POST /v1/memories/{name}/retrieve")
    def search(self, name: str, query: Any, mask: Any = None, k: int = 10) -> Op[list[Match]]:
        """The ``k`` stored patterns nearest what the memory recalls from ``query`` (one
        retrieval step), best first, with the memory's similarity (distances negated: 0 =
        identical). Arguments as for ``retrieve``. Associative search: a corrupted query
        finds the stored pattern it was made from, and the scores are to that recall."""
        result = yield from Operations.retrieve(self, name, query, mask=mask, k=k)
        return result.matches

    @operation("POST /v1/memories/{name}/complete")
    def complete(self, name: str, image: Any, mask: Any = None, k: int = 3) -> Op[CompleteResult]:
        """Complete a partial picture: known pixels kept as given, the others filled.

        Args:
            image: a picture (PIL, path, bytes) or an array ((C, H, W) or (H, W) in [0, 1],
                sent as an 8-bit PNG); an RGBA picture's alpha 0 marks the pixels to fill.
            mask: a mask picture (white = known) or booleans (H, W) / (C, H, W), True = known.
                Without a mask (and without alpha) the service answers 422 ``mask_required``.
        """
        body: dict[str, Any] = {"image": b64(picture_bytes(image)), "k": k}
        if mask is not None:
            body["mask"] = b64(mask_picture(mask))
        data = yield from self._json("POST", path(MEMORY + "/complete", name=name), body, idempotent=True)
        return CompleteResult.from_json(data)

    @operation("POST /v1/memories/{name}/lookup")
    def lookup(
        self, name: str, text: str | None = None, image: Any = None, mask: Any = None, k: int = 5
    ) -> Op[LookupResult]:
        """Cross-modal lookup in a memory created with ``text=True``; give ``text`` or ``image``.

        - ``text``: the caption part is given and the pattern completed: ``completion`` and
          ``patterns`` (the stored pairs whose captions fit best, with their pictures).
        - ``image``: a picture, or an array (a vector memory's D numbers), with an optional
          ``mask`` as for ``retrieve``: the caption part is completed: ``captions``.
        """
        if (text is None) == (image is None):
            raise ValueError("give exactly one of text or image")
        if text is not None:
            if mask is not None:
                raise ValueError("a text query takes no mask")
            body: dict[str, Any] = {"text": text, "k": k}
        else:
            body = {**cue_fields(image), "k": k}
            if mask is not None:
                body["mask"] = mask_field(mask)
        data = yield from self._json("POST", path(MEMORY + "/lookup", name=name), body, idempotent=True)
        return LookupResult.from_json(data)

    # --- jobs -----------------------------------------------------------------------------
    @operation("POST /v1/memories/{name}/train")
    def train(self, name: str, epochs: int | None = None) -> Op[Any]:
        """Train a memory's model (kinds pc, pcgraph) on every pattern stored now, as a
        background job: returns a ``Job`` (``wait()``, ``cancel()``, ``refresh()``).
        Conflict (``job_running``) while one runs; ValidationError (``not_trainable``) for hopfield."""
        body = {} if epochs is None else {"epochs": epochs}
        data = yield from self._json("POST", path(MEMORY + "/train", name=name), body)
        return self._make_job(JobState.from_json(data))

    def _job_state(self, job_id: str) -> Op[JobState]:
        return JobState.from_json((yield from self._json("GET", path(JOB, job_id=job_id))))

    @operation("GET /v1/jobs/{job_id}")
    def job(self, job_id: str) -> Op[Any]:
        """A job by id (``Job``); NotFound (``job_not_found``): jobs are forgotten on restart."""
        return self._make_job((yield from Operations._job_state(self, job_id)))

    @operation("GET /v1/jobs")
    def jobs(self, memory: str | None = None) -> Op[list[Any]]:
        """The jobs the service remembers (unfinished ones and the last finished ones), or one memory's."""
        params = None if memory is None else {"memory": memory}
        data = yield from self._json("GET", "/v1/jobs", params=params)
        return [self._make_job(JobState.from_json(j)) for j in data["jobs"]]

    def _cancel_job(self, job_id: str) -> Op[JobState]:
        return JobState.from_json((yield from self._json("DELETE", path(JOB, job_id=job_id))))

    @operation("DELETE /v1/jobs/{job_id}")
    def cancel_job(self, job_id: str) -> Op[Any]:
        """Cancel a job (it stops after its current epoch; the memory keeps its previous model)."""
        return self._make_job((yield from Operations._cancel_job(self, job_id)))

    def _wait_job(
        self, job_id: str, progress: bool, timeout: float | None, poll_interval: float
    ) -> Op[JobState]:
        """Poll a job until it finishes (its last state), with a tqdm bar of its epochs, the
        last energy and the service's ETA; JobFailed (``job_timeout``) after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                state = yield from Operations._job_state(self, job_id)
                if progress and bar is None:
                    bar = tqdm(total=state.epochs, unit="epoch", desc=f"{state.kind} {state.memory}")
                if bar is not None:
                    if state.epochs is not None:
                        bar.total = state.epochs
                    bar.n = state.epoch
                    bar.set_postfix(_postfix(state), refresh=True)
                if state.done:
                    return state
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobFailed(
                        f"job {job_id} still {state.status} after {timeout} s", code="job_timeout", job=state
                    )
                yield Sleep(poll_interval)
        finally:
            if bar is not None:
                bar.close()

    # --- demo data --------------------------------------------------------------------------
    @operation("GET /v1/demo")
    def demo_presets(self) -> Op[list[DemoPreset]]:
        """The demo data sets the service can load (``create_demo``)."""
        data = yield from self._json("GET", "/v1/demo")
        return [DemoPreset.from_json(p) for p in data["presets"]]

    @operation("POST /v1/demo")
    def create_demo(
        self,
        preset: str,
        name: str | None = None,
        kind: str | None = None,
        count: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> Op[tuple[Memory, Any]]:
        """Create a memory filled from a bundled data set (``demo_presets()``) by a background
        job: returns (the memory, still empty; its load ``Job``). ``kind``: None = the
        preset's (a knowledge base is relational and takes no other); ``config`` goes over
        the preset's (a knowledge base's rules); memories that train are left untrained."""
        body: dict[str, Any] = {"preset": preset, "config": config or {}}
        for key, value in (("name", name), ("kind", kind)):
            if value is not None:
                body[key] = value
        if count is not None:
            body["count"] = count
        data = yield from self._json("POST", "/v1/demo", body)
        return Memory.from_json(data["memory"]), self._make_job(JobState.from_json(data["job"]))

    # --- anything else ----------------------------------------------------------------------
    def request(
        self,
        method: str,
        route: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Op[httpx.Response]:
        """A raw call (an endpoint this client has no method for yet), with the client's key,
        retries (GET/DELETE/PUT count as without side effects) and typed errors."""
        if json is not None:
            content = json_body(json)
        return (yield from self._call(method.upper(), route, params=params, content=content, headers=headers))


def _postfix(state: JobState) -> dict[str, str]:
    out = {"status": state.status}
    if state.energy is not None:
        out["energy"] = f"{state.energy:.4g}"
    if state.eta_seconds is not None and not state.done:
        out["eta"] = f"{state.eta_seconds:.0f}s"
    return out


def finished(state: JobState, raise_on_failure: bool) -> JobState:
    """The state of a job waited for; JobFailed for a failed or cancelled one when asked."""
    if raise_on_failure and state.status in ("failed", "cancelled"):
        code = "job_failed" if state.status == "failed" else "job_cancelled"
        why = f": {state.error}" if state.error else ""
        raise JobFailed(
            f"{state.kind} job {state.id} of memory {state.memory!r} {state.status}{why}",
            code=code,
            job=state,
        )
    return state
