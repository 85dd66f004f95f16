"""How the ``ams`` command shows results: aligned tables for people, JSON for scripts,
result files (pictures, ``.npy`` arrays), one-line errors and exit codes."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    ApiError,
    AuthError,
    BadRequest,
    Conflict,
    JobFailed,
    NetworkError,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
)
from .models import JobState, Match, Memory

# Exit codes scripts can test (also in docs/client.md).
OK, FAILED, USAGE, NOT_FOUND, CONFLICT, INVALID, AUTH, UNAVAILABLE, JOB_FAILED = 0, 1, 2, 3, 4, 5, 6, 7, 8


def exit_code(exc: BaseException) -> int:
    """The exit code for an error (2, usage, is argparse's own)."""
    for cls, code in (
        (NotFound, NOT_FOUND),
        (Conflict, CONFLICT),
        ((BadRequest, TooLarge, ValueError, TypeError, OSError), INVALID),
        (AuthError, AUTH),
        ((Unavailable, RateLimited, NetworkError), UNAVAILABLE),
        (JobFailed, JOB_FAILED),
    ):
        if isinstance(exc, cls):
            return code
    return FAILED


# The service's hints name query parameters; on the command line they are options.
_CLI_HINTS = {"pass ?fit=true": "pass --fit"}


def name_sources(message: str, sources: list[str], offset: int) -> str:
    """A store's error message with each ``patterns[i]`` (the index within the request that
    failed, whose first pattern is the ``offset``-th of the upload) written as the input it
    came from: ``patterns[2].image: ...`` -> ``pics/f42.png: ...``, ``patterns[0].id 'a'``
    -> ``codes.npy row 3: id 'a'``."""

    def source(match: re.Match) -> str:
        index = offset + int(match[1])
        if index >= len(sources):  # not one of ours: leave it as the service wrote it
            return match[0]
        field = match[2]
        return sources[index] + ("" if field in (None, "image", "vector") else f": {field}")

    return re.sub(r"patterns\[(\d+)\](?:\.(\w+))?", source, message)


def error_line(exc: BaseException) -> str:
    """One line naming the problem: the service's code and message (its hints in the command
    line's words), or the local error."""
    if isinstance(exc, ApiError):
        line = str(exc)
        for rest, cli in _CLI_HINTS.items():
            line = line.replace(rest, cli)
        return line
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    return f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)


def _cell(value: Any, width: int = 60) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned, header in capitals; "-" for empty cells; long cells cut."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line([h.upper() for h in header]), *(line(r) for r in cells)])


def pairs(items: Sequence[tuple[str, Any]]) -> str:
    """Key/value lines, keys aligned."""
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k.ljust(width)}  {_cell(v, 200)}" for k, v in items)


def emit(as_json: bool, data: Any, text: str) -> None:
    """Print ``data`` as JSON (scripts) or ``text`` (people)."""
    print(json.dumps(data, indent=2, default=_jsonable) if as_json else text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def shape_cell(shape: Sequence[int]) -> str | None:
    """``1x28x28``; None (shown "-") for a relational memory's ``()``."""
    return "x".join(map(str, shape)) or None


def memory_rows(memories: Sequence[Memory]) -> str:
    return table(
        ["name", "kind", "shape", "count", "state", "trained", "text"],
        [
            [m.name, m.kind, shape_cell(m.shape), count_cell(m), m.state, m.trained_count, m.text]
            for m in memories
        ],
    )


def count_cell(m: Memory) -> str | int:
    """The count, or ``57 (incomplete: 1 shard down)`` while it misses a shard's patterns."""
    if m.count_complete:
        return m.count
    down = m.shards_down
    return (
        f"{m.count} (incomplete: {down} shard{'' if down == 1 else 's'} down)"
        if down
        else f"{m.count} (incomplete)"
    )


def memory_text(m: Memory) -> str:
    return pairs(
        [
            ("name", m.name),
            ("kind", m.kind),
            ("shape", " ".join(map(str, m.shape)) or None),
            ("dim", m.dim),
            ("text", m.text),
            ("count", count_cell(m)),
            ("state", m.state),
            ("trained_count", m.trained_count),
            ("created_at", m.created_at.isoformat()),
            ("config", m.config),
        ]
    )


def match_rows(matches: Sequence[Match]) -> str:
    return table(["rank", "id", "score"], [[i + 1, m.id, m.score] for i, m in enumerate(matches)])


def job_rows(jobs: Sequence[JobState]) -> str:
    return table(
        ["id", "memory", "kind", "status", "progress", "epoch", "energy", "eta_s", "stop_reason"],
        [
            [
                j.id,
                j.memory,
                j.kind,
                j.status,
                f"{j.progress:.0%}",
                f"{j.epoch}/{j.epochs or '?'}",
                j.energy,
                None if j.eta_seconds is None else round(j.eta_seconds, 1),
                j.stop_reason,
            ]
            for j in jobs
        ],
    )


def job_json(j: JobState) -> dict[str, Any]:
    return {k: getattr(j, k) for k in JobState.__dataclass_fields__}


def write_result(out: str | Path, array: np.ndarray | None, image: Any) -> str:
    """Write a result to ``out``: ``.npy`` -> the numbers, anything else -> the picture
    (PIL picks the format from the suffix). Returns the path written."""
    out = Path(out)
    if out.suffix.lower() == ".npy":
        if array is None:
            raise ValueError("the answer holds no pattern to write")
        np.save(out, array)
    elif image is not None:
        image.save(out)
    else:
        raise ValueError(f"a vector memory's result has no picture: write it as .npy, not {out.name}")
    return str(out)


def warn(message: str) -> None:
    print(f"ams: {message}", file=sys.stderr)
