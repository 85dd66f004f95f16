"""The service's errors: one class per failure, each carrying its HTTP status and stable code.

Raised anywhere in the service (registry, storage, kinds, jobs, routers) without any web
import; ``errors.py`` turns every one of them, and memory_core's own errors, into the
error response in one place. ``ApiError`` is for request checks that name their status
and code where they are made.
"""

from __future__ import annotations

from typing import Any, ClassVar

from memory_core import EmptyMemoryError

__all__ = [
    "ApiError",
    "ArityMismatch",
    "DimensionTooLarge",
    "FactNotFound",
    "InvalidConfig",
    "InvalidQuery",
    "InvalidRule",
    "InvalidShape",
    "JobNotFound",
    "JobRunning",
    "MemoryBudgetExceeded",
    "MemoryEmpty",
    "MemoryExists",
    "MemoryFailed",
    "MemoryNotFound",
    "NotReady",
    "NotTrainable",
    "NotTrained",
    "PatternExists",
    "PatternNotFound",
    "RateLimited",
    "RuleConflict",
    "ServerBusy",
    "ServiceError",
    "ShardUnavailable",
    "StorageFull",
    "StorageUnavailable",
    "TooManyMemories",
    "UnknownEntity",
    "UnknownKind",
    "UnknownRelation",
    "WrongKind",
]


class ServiceError(Exception):
    """A failure answered with ``{"error": {"code", "message", "details"}}`` and ``status``.

    Subclasses fix ``status`` (4xx; 501 for a missing optional part; 503 while not ready)
    and ``code`` (stable, snake_case, what clients branch on).

    Arguments:
        message: what was wrong, naming the offending input.
        details: optional structured details (JSON-able).
        headers: extra response headers (e.g. WWW-Authenticate).
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.details, self.headers = message, details, headers


class ApiError(ServiceError):
    """A request check's error, with its status and code given where it is raised.

    Arguments:
        status: HTTP status; code: stable snake_case code, e.g. "invalid_cursor";
        message, details, headers: as ``ServiceError``.
    """

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, details, headers)
        self.status, self.code = status, code  # per instance


# --- what is asked for does not exist --------------------------------------------------------
class MemoryNotFound(ServiceError):
    status, code = 404, "memory_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no memory named {name!r}")


class PatternNotFound(ServiceError):
    status, code = 404, "pattern_not_found"

    def __init__(self, memory: str, pattern_id: str) -> None:
        super().__init__(f"no pattern {pattern_id!r} in memory {memory!r}")


class JobNotFound(ServiceError):
    status, code = 404, "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} (jobs are forgotten on restart)")


# --- the memory's state forbids it ------------------------------------------------------------
class MemoryExists(ServiceError):
    status, code = 409, "memory_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"a memory named {name!r} exists already")


class PatternExists(ServiceError):
    """Pattern ids taken already; ``ids`` lists them."""

    status, code = 409, "pattern_exists"

    def __init__(self, memory: str, ids: list[str]) -> None:
        super().__init__(f"pattern id(s) exist already in {memory!r}: {ids[:10]}", {"ids": ids})
        self.ids = ids


class TooManyMemories(ServiceError):
    status, code = 409, "too_many_memories"


class MemoryEmpty(ServiceError, EmptyMemoryError):
    """Recall or training on a memory that stores nothing (also an ``EmptyMemoryError``,
    memory_core's own, which the error responses map the same way)."""

    status, code = 409, "memory_empty"


class NotTrained(ServiceError):
    """A memory that needs training has no trained model yet."""

    status, code = 409, "not_trained"


class MemoryFailed(ServiceError):
    """The memory could not be recovered (or its model is damaged): ``reason`` says why.

    Its details, listing and delete still work; everything else answers this until the
    damage is repaired (a damaged model by training again) or the memory deleted."""

    status, code = 409, "memory_failed"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"memory {name!r} failed: {reason}", {"memory": name, "reason": reason})


class JobRunning(ServiceError):
    """The memory has an unfinished job already; ``job_id`` is that job's."""

    status, code = 409, "job_running"

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message, {"job": job_id})
        self.job_id = job_id


# --- what was asked for is not possible -------------------------------------------------------
class UnknownKind(ServiceError):
    status, code = 422, "unknown_kind"


class InvalidConfig(ServiceError):
    status, code = 422, "invalid_config"


class InvalidShape(ServiceError):
    status, code = 422, "invalid_shape"


class DimensionTooLarge(ServiceError):
    status, code = 422, "dimension_too_large"


class NotTrainable(ServiceError):
    status, code = 422, "not_trainable"


class MemoryBudgetExceeded(ServiceError):
    """What was asked for would take more memory than the service's budget allows
    (AMS_MEMORY_BUDGET); ``details`` give the bytes needed, free and the limit."""

    status, code = 422, "memory_budget_exceeded"

    def __init__(
        self,
        what: str,
        needed: int,
        free: int,
        limit: int,
        budget: str = "the service's memory budget",
        setting: str = "AMS_MEMORY_BUDGET",
    ) -> None:
        mib = 1 << 20
        super().__init__(
            f"{what} needs about {needed / mib:.0f} MiB; {free / mib:.0f} MiB of {budget} "
            f"of {limit / mib:.0f} MiB ({setting}) is free",
            {"needed_bytes": needed, "free_bytes": free, "limit_bytes": limit},
        )


# --- the service cannot do it now ------------------------------------------------------------
class NotReady(ServiceError):
    status, code = 503, "not_ready"


class ServerBusy(ServiceError):
    """Every byte or slot that this request would need is taken by others right now: retry."""

    status, code = 503, "server_busy"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, {"retry_after": retry_after}, {"Retry-After": str(retry_after)})


class RateLimited(ServiceError):
    """This key (or client) has sent more requests than AMS_RATE_LIMIT allows."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after": retry_after}, {"Retry-After": str(retry_after)})


class StorageFull(ServiceError):
    """The disk (or the filesystem's quota) is full: nothing of the write was kept."""

    status, code = 507, "insufficient_storage"


class StorageUnavailable(ServiceError):
    """Durable storage failed otherwise (an I/O error): nothing of the write was kept."""

    status, code = 503, "storage_error"


class ShardUnavailable(ServiceError):
    """Ray mode (app/cluster/): a shard or replica a request needs is restarting or unreachable.
    Answered 503 with Retry-After, never with an answer computed without it."""

    status, code = 503, "shard_unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


# --- relational memories -----------------------------------------------------------------------
class WrongKind(ServiceError):
    """The endpoint does not apply to this memory's kind (patterns vs facts)."""

    status, code = 422, "wrong_kind"


class FactNotFound(ServiceError):
    status, code = 404, "fact_not_found"

    def __init__(self, memory: str, fact_id: int) -> None:
        super().__init__(f"no fact {fact_id} in memory {memory!r}")


class UnknownRelation(ServiceError):
    """A query names a relation the memory has never seen (422: the memory exists, the
    request's content does not fit it)."""

    status, code = 422, "unknown_relation"


class UnknownEntity(ServiceError):
    status, code = 422, "unknown_entity"


class ArityMismatch(ServiceError):
    """A fact or query gives a relation another number of arguments than it has."""

    status, code = 422, "arity_mismatch"


class InvalidQuery(ServiceError):
    """A query without exactly one null argument, or otherwise malformed."""

    status, code = 422, "invalid_query"


class InvalidRule(ServiceError):
    status, code = 422, "invalid_rule"


class RuleConflict(ServiceError):
    """The rules contradict each other: some relation could hold for nothing."""

    status, code = 422, "rule_conflict"
