"""Python client of the associative memory service: ``Client`` (blocking), ``AsyncClient``
(asyncio) with the same methods, typed results (``ams_client.models``) and typed errors
(all ``ApiError``). Importing it imports neither torch nor anything of the service.
The ``ams`` command line is ``ams_client.cli``."""

__version__ = "0.1.0"

from .client import AsyncClient, Client
from .errors import (
    ApiError,
    AuthError,
    BadRequest,
    Conflict,
    Forbidden,
    JobFailed,
    NetworkError,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from .jobs import AsyncJob, Job
from .models import (
    CompleteResult,
    DemoPreset,
    Info,
    JobState,
    Limits,
    LookupCaption,
    LookupPattern,
    LookupResult,
    Match,
    Memory,
    Pattern,
    PatternInfo,
    Recalled,
    RetrieveResult,
    StopReason,
    StoreResult,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJob",
    "AuthError",
    "BadRequest",
    "Client",
    "CompleteResult",
    "Conflict",
    "DemoPreset",
    "Forbidden",
    "Info",
    "Job",
    "JobFailed",
    "JobState",
    "Limits",
    "LookupCaption",
    "LookupPattern",
    "LookupResult",
    "Match",
    "Memory",
    "NetworkError",
    "NotFound",
    "Pattern",
    "PatternInfo",
    "RateLimited",
    "Recalled",
    "RetrieveResult",
    "ServerError",
    "StopReason",
    "StoreResult",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "__version__",
]
