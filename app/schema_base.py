"""What the REST API's request and response models share: the strict base of request
bodies, the patterns of memory names and pattern ids, and the picture of the examples.

Kept apart so that the modules of models (``schemas.py``, ``recall_schemas.py``) import it
without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ID_PATTERN", "NAME_PATTERN", "PNG_1x1", "StrictModel"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

PNG_1x1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="


class StrictModel(BaseModel):
    """Request bodies: unknown fields refused, and no lax coercion ("1" or 0 for a bool)."""

    model_config = ConfigDict(extra="forbid", strict=True)
