"""``python -m app.healthcheck``: exit 0 when the local service answers /readyz with 200.

The container's HEALTHCHECK runs this (no curl in a slim image). It asks the loopback
address on AMS_PORT. It reads that one variable itself rather than building Settings,
so a configuration the service refuses still gets a plain "unhealthy", not a traceback.
"""

import os
import sys
import urllib.error
import urllib.request

from .settings import Settings


def main() -> int:
    port = os.environ.get("AMS_PORT") or Settings.model_fields["port"].default
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{int(port)}/readyz", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
