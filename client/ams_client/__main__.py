"""``python -m ams_client``: the ``ams`` command."""

import sys

from .cli import main

sys.exit(main())
