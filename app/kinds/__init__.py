"""The kinds of memory the service holds: ``KINDS``, name -> ``LiveMemory`` subclass.

One module per kind; ``base.LiveMemory`` is what they share, ``trained.TrainedKind`` what
the kinds trained in background jobs share. Adding a kind = a module with its subclass
(``kind``, ``resolve_config``, ``index``, ``_output``) and its line in ``KINDS``.
"""

from __future__ import annotations

from ..exceptions import UnknownKind, WrongKind
from .base import CaptionLookup, LiveMemory, Recall, TextLookup
from .hopfield import HopfieldMemory
from .pc import PCKind
from .pcgraph import PCGraphKind
from .relational import RelationalKind
from .trained import TrainedKind

__all__ = [
    "KINDS",
    "CaptionLookup",
    "HopfieldMemory",
    "LiveMemory",
    "PCGraphKind",
    "PCKind",
    "Recall",
    "RelationalKind",
    "TextLookup",
    "TrainedKind",
    "kind_class",
    "pattern_memory",
    "relational_memory",
]

KINDS: dict[str, type[LiveMemory]] = {
    cls.kind: cls for cls in (HopfieldMemory, PCKind, PCGraphKind, RelationalKind)
}


def kind_class(kind: str) -> type[LiveMemory]:
    """The class of a kind; ``UnknownKind`` (422) naming the kinds served."""
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownKind(f"unknown kind {kind!r}; this service has: {', '.join(KINDS)}")
    return cls


def pattern_memory(live: LiveMemory, endpoint: str) -> LiveMemory:
    """``live`` when it stores patterns; else ``WrongKind`` (422) saying what applies instead."""
    if not live.shaped:
        raise WrongKind(
            f"memory {live.name!r} is {live.kind}: it stores facts, so {endpoint} does not apply; "
            "use POST .../facts and POST .../query"
        )
    return live


def relational_memory(live: LiveMemory) -> RelationalKind:
    """``live`` when it is relational; else ``WrongKind`` (422) saying what applies instead."""
    if not isinstance(live, RelationalKind):
        raise WrongKind(
            f"memory {live.name!r} is {live.kind}: it stores patterns; facts and queries apply to "
            "relational memories"
        )
    return live
