"""The FastAPI application: ``create_app(settings)``, and ``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

import torch
from fastapi import FastAPI

import memory_core
from memory_core import SEPARATIONS, SIMILARITIES, resolve_device

from .settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service with the given settings (default: from the environment)."""
    settings = settings or get_settings()
    device = resolve_device(settings.device)
    app = FastAPI(title="Associative memory service", version=memory_core.__version__)
    app.state.settings = settings

    @app.get("/livez", tags=["health"])
    def livez() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> dict:
        """Ready to serve."""
        return {"status": "ready"}

    @app.get("/v1/info", tags=["info"])
    def info() -> dict:
        """Version, device, limits and what memories can be made of."""
        return {
            "version": memory_core.__version__,
            "device": str(device),
            "cuda": torch.cuda.is_available(),
            "kinds": ["hopfield"],
            "similarities": list(SIMILARITIES),
            "separations": list(SEPARATIONS),
            "limits": {
                "max_request_bytes": settings.max_request_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_batch": settings.max_batch,
            },
        }

    return app


app = create_app()
