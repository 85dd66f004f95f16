"""``python -m app.healthcheck``: exit 0 when the local service answers /readyz with 200.

The container's HEALTHCHECK runs this (no curl in a slim image). It reads the same
AMS_PORT as the service and always asks the loopback address.
"""

import sys
import urllib.error
import urllib.request

from .settings import Settings


def main() -> int:
    port = Settings().port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
