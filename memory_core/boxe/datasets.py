"""Small knowledge bases: benchmarks read offline from PyKEEN's wheel, and one bundled here.

PyKEEN (MIT licence; ``pip install pykeen==1.11.1``, this project's ``bench`` and ``test``
extras) ships Nations, UMLS and Kinship as ``pykeen/datasets/<name>/{train,valid,test}.txt``
(tab-separated head, relation, tail). They are read from the installed package without
importing it (PyKEEN's import is slow) and nothing is downloaded. The wheel states no
licence for the data itself (its MIT licence is PyKEEN's), so the project does not copy
them: they are there when PyKEEN is installed.

``europe_kb()`` is a small knowledge base written for this project (CC0) and bundled in
``memory_core/assets/europe_facts.json``: what the service's demo uses when PyKEEN is absent.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["PYKEEN_DATASETS", "BundledKB", "KBSplits", "europe_kb", "load_pykeen_dataset", "pykeen_available"]

PYKEEN_DATASETS = ("nations", "umls", "kinships")

Triple = tuple[str, tuple[str, str]]  # (relation, (head, tail)): BoxE's fact form


@dataclass(frozen=True)
class KBSplits:
    """A benchmark's facts, each ``(relation, (head, tail))``."""

    name: str
    train: list[Triple]
    valid: list[Triple]
    test: list[Triple]

    @property
    def entities(self) -> set[str]:
        return {e for split in (self.train, self.valid, self.test) for _, args in split for e in args}

    @property
    def relations(self) -> set[str]:
        return {r for split in (self.train, self.valid, self.test) for r, _ in split}


@dataclass(frozen=True)
class BundledKB:
    """A knowledge base bundled with the project: its facts ``(relation, args)`` and rules."""

    title: str
    about: str
    facts: list[tuple[str, tuple[str, ...]]]
    rules: list[dict]


def europe_kb() -> BundledKB:
    """22 European countries (CC0, written for this project): land borders, capitals and other
    cities, EU and NATO membership, official languages, currencies (176 facts), with the rules
    borders is symmetric, capital_of implies located_in, contains is the inverse of located_in."""
    raw = json.loads(
        resources.files("memory_core").joinpath("assets", "europe_facts.json").read_text("utf-8")
    )
    facts = [(row[0], tuple(row[1:])) for row in raw["facts"]]
    return BundledKB(raw["title"], raw["about"], facts, raw["rules"])


def pykeen_available() -> bool:
    """Whether PyKEEN's wheel (and so its benchmarks) is installed; quick, imports nothing."""
    return importlib.util.find_spec("pykeen") is not None


def _pykeen_root() -> Path:
    spec = importlib.util.find_spec("pykeen")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the knowledge-graph benchmarks are read from PyKEEN's wheel: pip install 'pykeen==1.11.1' "
            "(after torch), or install this project's 'bench' extra"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _read(path: Path) -> list[Triple]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{number}: expected head<TAB>relation<TAB>tail, got {line!r}")
        head, relation, tail = parts
        out.append((relation, (head, tail)))
    return out


def load_pykeen_dataset(name: str) -> KBSplits:
    """Nations (14 entities, 55 relations, 1592 / 199 / 201 facts), UMLS (135, 46,
    5216 / 652 / 661) or Kinships, as PyKEEN splits them."""
    key = name.lower()
    if key not in PYKEEN_DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(PYKEEN_DATASETS)}")
    folder = _pykeen_root() / "datasets" / key
    return KBSplits(key, *(_read(folder / f"{split}.txt") for split in ("train", "valid", "test")))
