"""``python -m app``: run the service with uvicorn on AMS_HOST:AMS_PORT (default 127.0.0.1:8000),
with header timeouts and a connection cap (app/server.py)."""

from .server import run
from .settings import get_settings

if __name__ == "__main__":
    run(get_settings())
