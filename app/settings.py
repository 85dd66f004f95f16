"""Service settings from the environment (prefix AMS_), with embedded defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting can be given as an environment variable AMS_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="AMS_", env_file=None, extra="ignore")

    host: str = Field("127.0.0.1", description="address to bind; 127.0.0.1 unless told otherwise")
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Field(Path("./data"), description="where patterns and checkpoints live")
    device: str = Field("auto", description="auto, cpu or cuda[:n]")
    api_key: str | None = Field(None, description="if set, /v1 needs this key")
    read_api_key: str | None = Field(None, description="if set, a key that may only read and recall")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(16_000_000, ge=64)
    max_batch: int = Field(1024, ge=1, description="most patterns or cues in one request")
    log_level: str = Field("info")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
