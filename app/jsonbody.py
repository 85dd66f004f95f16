"""JSON request bodies parsed with bounded memory, and without holding the GIL for long.

Parsing JSON into Python objects costs about 30 bytes per number and holds the GIL for the
whole parse (a 32 MiB body of numbers: ~1 s during which the event loop, /livez included,
waits). So the number of values a body can hold is bounded before it is parsed, and a
batch is parsed one item at a time:

- ``check_values``: a body's values are at most its commas + 1 (one C scan of the bytes);
  a recall's cue is bounded by its memory's dimension before anything is parsed.
- ``array_items``: the spans of the items of a body ``{"<key>": [item, item, ...]}``,
  found by a scan that stops only at strings and brackets (never inside a vector), so
  that each item is parsed, checked against the memory, and turned into compact arrays
  before the next: the GIL is released between items and the Python objects of one item
  at most are alive at a time.
"""

from __future__ import annotations

import re

from .exceptions import ApiError

__all__ = ["NotAnEnvelope", "array_items", "check_values", "value_count"]

_WS = b" \t\r\n"
_STRUCTURE = re.compile(rb'["\[\]{}]')  # inside an item: strings and brackets (numbers and commas skipped)
_BETWEEN = re.compile(rb"[^ \t\r\n]")  # between items: the next non-blank byte


class NotAnEnvelope(ValueError):
    """The body is not exactly ``{"<key>": [...]}`` of objects; ``malformed`` when it is not
    even well-formed there (else: valid JSON of another shape, e.g. another member)."""

    def __init__(self, message: str, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


_SLICE = 1 << 20  # bytes counted per C call: the GIL is free between them


def value_count(body: bytes, start: int = 0, end: int | None = None) -> int:
    """An upper bound on the numbers, strings and other values of ``body[start:end]``: its
    commas + 1 (counted a MiB at a time, so that a large body never holds the GIL for long)."""
    end = len(body) if end is None else end
    return sum(body.count(b",", i, min(i + _SLICE, end)) for i in range(start, end, _SLICE)) + 1


def check_values(body: bytes, most: int, what: str) -> None:
    """422 ``too_many_values`` when ``body`` may hold more than ``most`` values (see ``value_count``)."""
    count = value_count(body)
    if count > most:
        raise ApiError(
            422,
            "too_many_values",
            f"the request holds up to {count} values; {what} takes at most {most}",
            {"values": count, "limit": most},
        )


def _skip(body: bytes, i: int) -> int:
    while i < len(body) and body[i] in _WS:
        i += 1
    return i


def _string_end(body: bytes, i: int) -> int:
    """Index just past the string whose opening quote is at ``i``."""
    j = i
    while True:
        j = body.find(b'"', j + 1)
        if j < 0:
            raise NotAnEnvelope("a string is not closed", malformed=True)
        backslashes = 0
        while body[j - 1 - backslashes] == 0x5C:  # an odd run of backslashes escapes the quote
            backslashes += 1
        if backslashes % 2 == 0:
            return j + 1


def _object_end(body: bytes, i: int) -> int:
    """Index just past the object (or array) that opens at ``i``."""
    depth, j = 0, i
    while True:
        m = _STRUCTURE.search(body, j)
        if m is None:
            raise NotAnEnvelope("an object is not closed", malformed=True)
        j = m.start()
        c = body[j]
        if c == 0x22:  # "
            j = _string_end(body, j)
            continue
        depth += 1 if c in b"[{" else -1
        j += 1
        if depth == 0:
            return j
        if depth < 0:
            raise NotAnEnvelope("unbalanced brackets", malformed=True)


def array_items(body: bytes, key: str) -> list[tuple[int, int]]:
    """The (start, end) spans of the items of ``body`` = ``{"<key>": [{...}, {...}, ...]}``
    (blanks anywhere JSON allows them); ``NotAnEnvelope`` for any other body."""
    lead = b'"' + key.encode() + b'"'
    i = _skip(body, 0)
    if body[i : i + 1] != b"{":
        raise NotAnEnvelope("the body is not a JSON object", malformed=not body[i : i + 1] == b"[")
    i = _skip(body, i + 1)
    if not body.startswith(lead, i):
        raise NotAnEnvelope(f"the body's first member is not {key!r}", malformed=False)
    i = _skip(body, i + len(lead))
    if body[i : i + 1] != b":":
        raise NotAnEnvelope(f"{key!r} has no value", malformed=True)
    i = _skip(body, i + 1)
    if body[i : i + 1] != b"[":
        raise NotAnEnvelope(f"{key!r} is not a list", malformed=False)
    spans: list[tuple[int, int]] = []
    i = _skip(body, i + 1)
    if body[i : i + 1] == b"]":
        i += 1
    else:
        while True:
            if body[i : i + 1] != b"{":
                raise NotAnEnvelope(f"an item of {key!r} is not an object", malformed=False)
            end = _object_end(body, i)
            spans.append((i, end))
            m = _BETWEEN.search(body, end)
            if m is None:
                raise NotAnEnvelope("the body ends inside the list", malformed=True)
            i = _skip(body, m.start() + 1)
            if body[m.start()] == 0x5D:  # ]
                break
            if body[m.start()] != 0x2C:  # ,
                raise NotAnEnvelope("items are not separated by commas", malformed=True)
    i = _skip(body, i)
    if body[i : i + 1] != b"}":
        raise NotAnEnvelope(f"the body has members besides {key!r}", malformed=body[i : i + 1] != b",")
    if _skip(body, i + 1) != len(body):
        raise NotAnEnvelope("there is more after the JSON object", malformed=True)
    return spans
