"""The kinds of memory the service holds: ``KINDS``, name -> ``LiveMemory`` subclass.

One module per kind; ``base.LiveMemory`` is what they share, ``trained.TrainedKind`` what
the kinds trained in background jobs share. Adding a kind = a module with its subclass
(``kind``, ``resolve_config``, ``index``, ``_output``) and its line in ``KINDS``.
"""

from __future__ import annotations

from ..exceptions import UnknownKind
from .base import CaptionLookup, LiveMemory, Recall, TextLookup
from .hopfield import HopfieldMemory
from .pc import PCKind
from .pcgraph import PCGraphKind
from .trained import TrainedKind

__all__ = [
    "KINDS",
    "CaptionLookup",
    "HopfieldMemory",
    "LiveMemory",
    "PCGraphKind",
    "PCKind",
    "Recall",
    "TextLookup",
    "TrainedKind",
    "kind_class",
]

KINDS: dict[str, type[LiveMemory]] = {cls.kind: cls for cls in (HopfieldMemory, PCKind, PCGraphKind)}


def kind_class(kind: str) -> type[LiveMemory]:
    """The class of a kind; ``UnknownKind`` (422) naming the kinds served."""
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownKind(f"unknown kind {kind!r}; this service has: {', '.join(KINDS)}")
    return cls
