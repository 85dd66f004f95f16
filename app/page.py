"""The demo page: ``app/static`` (plain HTML, CSS and JS, nothing from the network), served at ``/``.

``GET /`` is the page itself; its scripts and styles are under ``/static/``. The page is
open even when API keys are set (it holds no data); it asks for a key and sends it
with each /v1 call. A Content-Security-Policy keeps it to this origin. The script is a set
of ES modules (``demo.js`` imports the others): every file under /static/ is revalidated on
each load (``no-cache`` with its ETag), so that after an upgrade a browser never runs new
modules beside old ones from its cache.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

__all__ = ["STATIC_DIR", "install_page"]

STATIC_DIR = Path(__file__).parent / "static"

# Everything from this origin; pictures also as data:/blob: URLs (API answers, uploads).
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class RevalidatedStaticFiles(StaticFiles):
    """StaticFiles whose answers say ``Cache-Control: no-cache``: a browser keeps its copy but
    asks each time (a 304 when the ETag still matches)."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_page(app: FastAPI) -> None:
    """Serve the page at / and its files at /static/ (neither is in the OpenAPI document)."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", RevalidatedStaticFiles(directory=STATIC_DIR), name="static")
