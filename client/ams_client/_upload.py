"""Uploads of many items (patterns, facts) in as many requests as the service's limits need.

Items arrive as JSON texts, one per item; they are packed into bodies ``{"<key>": [...]}``
of at most the service's ``max_request_bytes`` (or the client's ``upload_bytes``) and
``max_batch`` items, sent in order. A body the service (or a proxy) still finds too large
(413) is split in halves, and later bodies are kept under half its size. Written once for
``store`` and ``store_facts``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

from ._core import Core, Op, splittable
from .errors import ApiError

T = TypeVar("T")


class Packer:
    """Splits a stream of JSON items into bodies ``{"<key>": [...]}`` of at most ``budget``
    bytes and ``max_count`` items (a lone item over the budget goes alone: the service decides)."""

    def __init__(self, key: str, budget: int, max_count: int) -> None:
        self.open, self.close = b'{"' + key.encode("ascii") + b'":[', b"]}"
        self.budget, self.max_count = budget, max_count

    def chunks(self, items: Iterator[str]) -> Iterator[list[str]]:
        chunk: list[str] = []
        empty = len(self.open) + len(self.close)
        size = empty
        for item in items:
            extra = len(item) + (1 if chunk else 0)  # items are ASCII JSON: characters = bytes
            if chunk and (size + extra > self.budget or len(chunk) >= self.max_count):
                yield chunk
                chunk, size, extra = [], empty, len(item)
            chunk.append(item)
            size += extra
        if chunk:
            yield chunk

    def body(self, chunk: list[str]) -> bytes:
        return self.open + ",".join(chunk).encode("ascii") + self.close


class Uploads(Core):
    """The upload primitive of the operations that store many items."""

    def _upload(
        self,
        route: str,
        key: str,
        items: Iterator[str],
        combine: Callable[[list[Any]], T],
        *,
        params: dict[str, Any] | None = None,
        total: int | None = None,
        unit: str,
        desc: str,
        progress: bool | None = None,
    ) -> Op[T]:
        """POST ``items`` to ``route`` in packed bodies, in order; ``combine`` makes the result
        of the answers (JSON, one per request sent). A tqdm bar (``total`` items) when
        ``progress``, or (None) on a terminal once the upload takes a second request.
        An ApiError carries ``combine`` of the answers before it in ``exc.stored`` (None
        when nothing was stored); ValueError when there are no items."""
        limits = yield from self._limits_op()
        packer = Packer(key, self.upload_bytes or limits.max_request_bytes, limits.max_batch)
        answers: list[Any] = []
        sent = 0
        bar = None
        try:
            for requests, chunk in enumerate(packer.chunks(items)):
                if bar is None and progress is not False and (progress or requests >= 1):
                    bar = tqdm(
                        total=total,
                        initial=sent,
                        unit=unit,
                        desc=desc,
                        disable=None if progress is None else False,
                    )
                yield from self._post_chunk(route, chunk, packer, params, answers)
                sent += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        except ApiError as exc:
            exc.stored = combine(answers) if answers else None
            raise
        finally:
            if bar is not None:
                bar.close()
        if not answers:
            raise ValueError(f"nothing to store: no {unit}s given")
        return combine(answers)

    def _post_chunk(
        self,
        route: str,
        chunk: list[str],
        packer: Packer,
        params: dict[str, Any] | None,
        answers: list[Any],
    ) -> Op[None]:
        """One request (its answer appended to ``answers``); a body too large is sent in halves."""
        body = packer.body(chunk)
        try:
            answers.append((yield from self._json("POST", route, None, params=params, content=body)))
        except ApiError as exc:
            if not (splittable(exc) and len(chunk) > 1):
                raise
            packer.budget = min(packer.budget, len(body) // 2)
            half = len(chunk) // 2
            yield from self._post_chunk(route, chunk[:half], packer, params, answers)
            yield from self._post_chunk(route, chunk[half:], packer, params, answers)
