"""Service settings from the environment (prefix AMS_), with embedded defaults.

Every field below can be set as ``AMS_<FIELD>`` (e.g. ``AMS_DATA_DIR=/var/lib/ams``);
the README's configuration table lists them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting can be given as an environment variable AMS_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="AMS_", env_file=None, extra="ignore")

    # --- serving ---------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="address to bind; 127.0.0.1 unless told otherwise")
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = Field("info")
    data_dir: Path = Field(Path("./data"), description="where patterns and checkpoints live")
    device: str = Field("auto", description="auto, cpu or cuda[:n]")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default")

    # --- security --------------------------------------------------------------------
    api_key: str | None = Field(None, description="if set, /v1 needs this key")
    read_api_key: str | None = Field(None, description="if set, a key that may only read and recall")

    # --- limits ----------------------------------------------------------------------
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="largest request body, counted while reading"
    )
    max_image_pixels: int = Field(
        16_000_000, ge=64, description="largest width * height of an uploaded image"
    )
    max_batch: int = Field(1024, ge=1, description="most patterns in one store request")
    max_dim: int = Field(1 << 20, ge=1, description="largest pattern dimension D = C*H*W of a memory")
    max_memories: int = Field(1000, ge=1, description="most memories at once")
    max_text_chars: int = Field(
        2000,
        ge=1,
        le=2000,
        description="longest caption of a pattern or text query (the text encoder's 2000 at most)",
    )
    max_metadata_bytes: int = Field(
        16 * 1024, ge=2, description="largest metadata object of a pattern, as JSON"
    )
    max_page: int = Field(1000, ge=1, description="most patterns in one page of a listing")
    max_k: int = Field(100, ge=1, description="most matches one recall may ask for")
    max_steps: int = Field(100, ge=1, description="most iterated retrieval steps one recall may ask for")
    max_epochs: int = Field(100_000, ge=1, description="most epochs of a training job or a config's epochs")
    max_solver_steps: int = Field(
        10_000,
        ge=1,
        description="largest value of a config's *_steps and *_iters (relaxation, recall, training)",
    )

    # --- protection --------------------------------------------------------------------
    memory_budget: ByteSize | None = Field(
        None,
        description="bytes the memories, requests and jobs may take together, e.g. 8GiB; "
        "unset: half of what the process could get at start (RAM, cgroup, RLIMIT_AS)",
    )
    max_inflight_bytes: ByteSize | None = Field(
        None,
        description="request body bytes held at once by all requests; unset: an eighth of the memory "
        "budget (at least AMS_MAX_REQUEST_BYTES)",
    )
    body_timeout: float = Field(60.0, gt=0, description="seconds a client may take to send a request body")
    header_timeout: float = Field(
        10.0, gt=0, description="seconds a client may take to send a request's headers (python -m app)"
    )
    max_connections: int = Field(
        1000, ge=1, description="open connections and requests at once; more get 503 (python -m app)"
    )
    rate_limit: float = Field(
        0.0, ge=0, description="requests per second per API key (or client address without keys); 0 = off"
    )
    rate_burst: int = Field(
        0, ge=0, description="requests one key may send at once on top; 0 = 2 s of rate_limit"
    )

    # --- micro-batching of recalls ----------------------------------------------------
    recall_batch_max: int = Field(
        64, ge=1, le=4096, description="most concurrent recalls of one memory answered by one call (1 = off)"
    )
    recall_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="longest a recall waits for others to share its batch, in ms"
    )

    fast_recall: bool = Field(
        True,
        description="serve retrieve, complete and lookup past FastAPI's routing (app/fastpath.py); "
        "false sends them through FastAPI like every other request",
    )

    # --- background jobs -------------------------------------------------------------
    train_workers: int = Field(1, ge=1, description="training jobs that run at once (others queue)")
    jobs_kept: int = Field(200, ge=1, description="finished jobs remembered for GET /v1/jobs/{id}")

    # --- Ray mode (app/cluster/, docs/scale.md): unset = one process, no Ray -----------
    ray_address: str | None = Field(
        None, description="'auto' or a Ray cluster address: shard memories over that cluster"
    )
    ray_namespace: str = Field("ams", description="Ray namespace of this service's named actors")
    ray_node_ip: str | None = Field(
        None, description="this machine's address in the Ray cluster, when Ray's own guess is wrong"
    )
    shards: int = Field(1, ge=1, le=1024, description="shards of a new hopfield memory without config.shards")
    replicas: int = Field(
        1, ge=1, le=64, description="recall replicas of a new trained memory without config.replicas"
    )
    shard_data_dir: Path | None = Field(
        None, description="where shards keep their SQLite files; default AMS_DATA_DIR/shards"
    )
    shard_storage: Literal["node", "shared"] = Field(
        "node",
        description="node: each shard pinned to the node it was first placed on, files on that node's "
        "disk; shared: shards go anywhere, AMS_SHARD_DATA_DIR on a filesystem every node mounts",
    )
    shard_cpus: float = Field(1.0, ge=0, description="Ray CPUs each shard or replica actor reserves")
    shard_gpus: float = Field(0.0, ge=0, description="GPU fraction each shard or replica actor reserves")
    shard_threads: int = Field(1, ge=1, description="torch threads in each shard or replica actor")
    shard_timeout_s: float = Field(
        30.0, gt=0, description="longest wait for a shard's answer before 503 shard_unavailable"
    )
    shard_memory_budget: ByteSize | None = Field(
        None,
        description="bytes each shard's patterns may take, its store's working set included, e.g. "
        "2GiB; unset: half of what the shard's process could get when it started, times its share of "
        "its node's CPUs (AMS_SHARD_CPUS over the node's)",
    )

    @model_validator(mode="after")
    def _read_key_needs_full_key(self) -> Settings:
        # A read-only key alone would leave writes open to anyone: refuse the combination.
        if self.read_api_key and not self.api_key:
            raise ValueError("AMS_READ_API_KEY needs AMS_API_KEY too (else writes would need no key)")
        if self.read_api_key and self.api_key and self.read_api_key == self.api_key:
            raise ValueError("AMS_READ_API_KEY must differ from AMS_API_KEY")
        return self


def settings_error(exc: ValidationError) -> str:
    """One line naming each bad setting by its environment variable, e.g.
    ``AMS_PORT: Input should be less than or equal to 65535 (got '70000')``."""
    problems = []
    for err in exc.errors():
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("loc"):
            name = "AMS_" + str(err["loc"][0]).upper()
            got = "" if "KEY" in name else f" (got {err.get('input')!r})"  # never echo a key
            message = f"{name}: {message}{got}"
        problems.append(message)
    return "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment.

    Raises:
        SystemExit: with a one-line message naming the bad setting(s), so that a server
            started with a wrong AMS_* variable stops with that line instead of a traceback.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise SystemExit(f"ams: invalid settings: {settings_error(exc)}") from None
