"""``python -m app``: run the service with uvicorn on AMS_HOST:AMS_PORT (default 127.0.0.1:8000)."""

import uvicorn

from .settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run("app.main:app", host=settings.host, port=settings.port, log_level=settings.log_level)
