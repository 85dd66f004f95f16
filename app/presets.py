"""Demo presets: memories preloaded from the offline data that ships with the service.

A preset says what memory to make (shape, whether it carries captions) and how to
load its patterns. Loading gives ``RawPattern``s, the same form a store request is
decoded into, so a demo memory goes through the service's own store path
(``prepare_patterns`` + ``Registry.store``): checks, caption embeddings for text
memories, durability and metrics are those of any other store.

Presets:
- ``fashion``: Fashion-MNIST test images (1, 28, 28), ids like ``sneaker-17``, the class
  name as metadata; 500 by default, up to the 10 000 of the test split.
- ``photos``: the 69 captioned photo crops (3, 64, 64) of ``memory_core.captions``, as a
  text memory (``text: true``) with each caption as the pattern's ``text`` and its
  paraphrase (a reworded query for trying the caption lookup) in the metadata.
- ``europe`` (kind relational): the knowledge base bundled with memory_core (176 facts
  about 22 European countries, with its rules); its load gives facts, not patterns.
- ``nations`` (kind relational): PyKEEN's Nations training facts (1592), when PyKEEN's
  wheel is installed (the ``test`` and ``bench`` extras); the data is not copied into the
  project (memory_core/boxe/datasets.py says why).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from memory_core.boxe.datasets import europe_kb, load_pykeen_dataset, pykeen_available
from memory_core.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, DatasetUnavailable, flatten

from .codec import RawPattern

__all__ = ["PRESETS", "DatasetUnavailable", "Preset"]


@dataclass(frozen=True)
class Preset:
    """A demo memory's recipe.

    Attributes:
        name: the preset's name in the API.
        title, description: for people (the demo page shows them).
        shape: the memory's shape (C, H, W); () for a relational memory.
        text: whether the memory pairs each pattern with a caption.
        default_count, max_count: patterns (facts) loaded by default, and at most.
        check: raises DatasetUnavailable (naming what to install) when the data is missing; quick.
        load: count -> that many patterns (facts: (relation, args) for kind relational), in a
            fixed order (the same on every machine).
        kind: the memory's kind when the request names none; relational presets take no other.
        config: the memory's config under the request's (e.g. a knowledge base's rules).
    """

    name: str
    title: str
    description: str
    shape: tuple[int, ...]
    text: bool
    default_count: int
    max_count: int
    check: Callable[[], None]
    load: Callable[[int], list[Any]]
    kind: str = "hopfield"
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_name(self) -> str:
        """The memory's name when the request names none."""
        return f"demo-{self.name}"


def _slug(label: str) -> str:
    """'T-shirt/top' -> 't-shirt-top', 'Ankle boot' -> 'ankle-boot' (a valid pattern id part)."""
    return "-".join("".join(c if c.isalnum() else " " for c in label.lower()).split())


def _check_fashion() -> None:
    for prefix in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        if not (FASHION_MNIST_DIR / prefix).exists():
            raise DatasetUnavailable(
                f"Fashion-MNIST not found under {FASHION_MNIST_DIR}: install the Debian package "
                "'dataset-fashion-mnist' or set AMS_FASHION_MNIST_DIR"
            )


def _load_fashion(count: int) -> list[RawPattern]:
    from memory_core.data import fashion_mnist

    images, labels = fashion_mnist("test", limit=count)  # (N, 1, 28, 28), (N,)
    vectors = flatten(images)  # (N, 784)
    out = []
    for i, (vec, label) in enumerate(zip(vectors, labels.tolist(), strict=True)):
        name = FASHION_MNIST_CLASSES[label]
        out.append(RawPattern(id=f"{_slug(name)}-{i}", vector=vec.tolist(), metadata={"label": name}))
    return out


def _check_photos() -> None:
    if importlib.util.find_spec("skimage") is None:
        raise DatasetUnavailable("the captioned photos need scikit-image: pip install scikit-image")


def _load_photos(count: int) -> list[RawPattern]:
    from memory_core.captions import photo_caption_pairs

    pairs = photo_caption_pairs(64)
    vectors = flatten(pairs.images[:count]).to(torch.float32)  # (n, 3*64*64)
    return [
        RawPattern(id=pid, vector=vec.tolist(), text=caption, metadata={"paraphrase": para})
        for pid, vec, caption, para in zip(pairs.ids, vectors, pairs.captions, pairs.paraphrases)
    ]


def _check_nations() -> None:
    if not pykeen_available():
        raise DatasetUnavailable(
            "Nations is read from PyKEEN's wheel: pip install 'pykeen==1.11.1' (after torch), "
            "or the project's test or bench extra"
        )


def _load_nations(count: int) -> list[tuple[str, tuple[str, ...]]]:
    return [(relation, tuple(args)) for relation, args in load_pykeen_dataset("nations").train[:count]]


_EUROPE = europe_kb()

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="fashion",
            title="Fashion-MNIST",
            description="Fashion-MNIST test images (28x28 grey): clothes, shoes and bags, "
            "named by class (e.g. sneaker-17)",
            shape=(1, 28, 28),
            text=False,
            default_count=500,
            max_count=10_000,
            check=_check_fashion,
            load=_load_fashion,
        ),
        Preset(
            name="photos",
            title="Captioned photos",
            description="69 crops (64x64 colour) of the photos bundled with scikit-image, each with a "
            "written caption: a text memory for caption lookups",
            shape=(3, 64, 64),
            text=True,
            default_count=69,
            max_count=69,
            check=_check_photos,
            load=_load_photos,
        ),
        Preset(
            name="europe",
            title="European countries",
            description="A knowledge base of 22 European countries: borders, capitals and cities, EU and "
            "NATO, languages, currencies; rules: borders is symmetric, capital_of implies located_in, "
            "contains is the inverse of located_in",
            shape=(),
            text=False,
            default_count=len(_EUROPE.facts),
            max_count=len(_EUROPE.facts),
            check=lambda: None,
            load=lambda count: _EUROPE.facts[:count],
            kind="relational",
            config={"rules": _EUROPE.rules},
        ),
        Preset(
            name="nations",
            title="Nations",
            description="The Nations benchmark (14 countries, 55 relations such as exports3, "
            "embassy, ngo) from PyKEEN's wheel, training split; only where PyKEEN is installed",
            shape=(),
            text=False,
            default_count=1592,
            max_count=1592,
            check=_check_nations,
            load=_load_nations,
            kind="relational",
        ),
    )
}
