"""BoxE's rules as logic, before any geometry: the five rule types and their JSON forms
(``parse_rule``), and what a set of rules implies: whether it contradicts itself
(``check_consistent``) and what each relation's facts make false (``excluded_by``).

``rules.py`` turns rules into constructions on the boxes and re-exports all of this.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import RuleConflictError, RuleError

__all__ = [
    "Exclusion",
    "Hierarchy",
    "Intersection",
    "Inversion",
    "Rule",
    "Symmetry",
    "check_consistent",
    "excluded_by",
    "parse_rule",
    "required_arity",
]


@dataclass(frozen=True)
class Hierarchy:
    """premise(x..) => conclusion(x..), same arity, same argument order."""

    premise: str
    conclusion: str

    @property
    def relations(self) -> tuple[str, ...]:
        return (self.premise, self.conclusion)

    def to_dict(self) -> dict:
        return {"type": "hierarchy", "premise": self.premise, "conclusion": self.conclusion}


@dataclass(frozen=True)
class Symmetry:
    """relation(x, y) => relation(y, x); binary relations only."""

    relation: str

    @property
    def relations(self) -> tuple[str, ...]:
        return (self.relation,)

    def to_dict(self) -> dict:
        return {"type": "symmetry", "relation": self.relation}


@dataclass(frozen=True)
class Inversion:
    """relation(x, y) <=> inverse(y, x); binary relations only."""

    relation: str
    inverse: str

    @property
    def relations(self) -> tuple[str, ...]:
        return (self.relation, self.inverse)

    def to_dict(self) -> dict:
        return {"type": "inversion", "relation": self.relation, "inverse": self.inverse}


@dataclass(frozen=True)
class Intersection:
    """premises[0](x..) & premises[1](x..) & ... => conclusion(x..), all of one arity."""

    premises: tuple[str, ...]
    conclusion: str

    @property
    def relations(self) -> tuple[str, ...]:
        return (*self.premises, self.conclusion)

    def to_dict(self) -> dict:
        return {"type": "intersection", "premises": list(self.premises), "conclusion": self.conclusion}


@dataclass(frozen=True)
class Exclusion:
    """relations[0](x..) & relations[1](x..) => false: no tuple is in both."""

    relations: tuple[str, str]

    def to_dict(self) -> dict:
        return {"type": "exclusion", "relations": list(self.relations)}


Rule = Hierarchy | Symmetry | Inversion | Intersection | Exclusion

_FIELDS = {
    "hierarchy": ("premise", "conclusion"),
    "symmetry": ("relation",),
    "inversion": ("relation", "inverse"),
    "intersection": ("premises", "conclusion"),
    "exclusion": ("relations",),
}


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise RuleError(f"{where} must be a non-empty relation name, got {value!r}")
    return value


def parse_rule(rule: Rule | Mapping) -> Rule:
    """A rule object from itself or from its JSON form, e.g.
    ``{"type": "hierarchy", "premise": "capital_of", "conclusion": "located_in"}``;
    the fields of each type are the dataclasses' (``premises`` and ``relations`` lists)."""
    if isinstance(rule, Hierarchy | Symmetry | Inversion | Intersection | Exclusion):
        rule = rule.to_dict()  # validated like a dict: dataclasses do not check their fields
    if not isinstance(rule, Mapping):
        raise RuleError(f"a rule must be a mapping with a 'type', got {type(rule).__name__}")
    kind = rule.get("type")
    if kind not in _FIELDS:
        raise RuleError(f"unknown rule type {kind!r}; known: {', '.join(_FIELDS)}")
    extra = set(rule) - {"type", *_FIELDS[kind]}
    missing = [f for f in _FIELDS[kind] if f not in rule]
    if extra or missing:
        raise RuleError(
            f"{kind} rule takes fields {list(_FIELDS[kind])}; missing {missing}, unknown {sorted(extra)}"
        )
    if kind == "hierarchy":
        return Hierarchy(_name(rule["premise"], "premise"), _name(rule["conclusion"], "conclusion"))
    if kind == "symmetry":
        return Symmetry(_name(rule["relation"], "relation"))
    if kind == "inversion":
        return Inversion(_name(rule["relation"], "relation"), _name(rule["inverse"], "inverse"))
    if kind == "intersection":
        premises = rule["premises"]
        if isinstance(premises, str) or not isinstance(premises, Sequence) or len(premises) < 2:
            raise RuleError(
                f"intersection premises must be a list of at least two relations, got {premises!r}"
            )
        return Intersection(
            tuple(_name(p, "premise") for p in premises), _name(rule["conclusion"], "conclusion")
        )
    pair = rule["relations"]
    if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise RuleError(f"exclusion relations must be a list of two relations, got {pair!r}")
    return Exclusion((_name(pair[0], "relation"), _name(pair[1], "relation")))


def required_arity(rule: Rule) -> int | None:
    """2 for symmetry and inversion (they swap two arguments), else None (any one arity)."""
    return 2 if isinstance(rule, Symmetry | Inversion) else None


# --- the logical check: which (relation, argument permutation) each relation implies ----------
def _implications(
    rules: Sequence[Rule], arity: Mapping[str, int]
) -> dict[str, list[tuple[str, tuple, Rule]]]:
    """Single-premise implications ``r -> (s, perm, rule)``: r(x) => s(x[perm[0]], x[perm[1]], ..)."""
    edges: dict[str, list[tuple[str, tuple, Rule]]] = {}
    for rule in rules:
        if isinstance(rule, Hierarchy):
            n = arity[rule.premise]
            edges.setdefault(rule.premise, []).append((rule.conclusion, tuple(range(n)), rule))
        elif isinstance(rule, Symmetry):
            edges.setdefault(rule.relation, []).append((rule.relation, (1, 0), rule))
        elif isinstance(rule, Inversion):
            edges.setdefault(rule.relation, []).append((rule.inverse, (1, 0), rule))
            edges.setdefault(rule.inverse, []).append((rule.relation, (1, 0), rule))
    return edges


def _closure(
    source: str, edges: Mapping[str, list[tuple[str, tuple, Rule]]], n: int
) -> dict[tuple, list[Rule]]:
    """Every (relation, perm) that ``source`` (arity n) implies, with the rules on the way."""
    start = (source, tuple(range(n)))
    why: dict[tuple, list[Rule]] = {start: []}
    queue = deque([start])
    while queue:
        rel, perm = queue.popleft()
        for target, step, rule in edges.get(rel, ()):
            state = (target, tuple(perm[j] for j in step))
            if state not in why:
                why[state] = [*why[(rel, perm)], rule]
                queue.append(state)
    return why


def check_consistent(rules: Sequence[Rule], arity: Mapping[str, int]) -> None:
    """Raise RuleConflictError when a relation implies both sides of an exclusion on the
    same arguments (it could then hold for nothing)."""
    exclusions = [r for r in rules if isinstance(r, Exclusion)]
    if not exclusions:
        return
    edges = _implications(rules, arity)
    for source in sorted(arity):
        why = _closure(source, edges, arity[source])
        for ex in exclusions:
            a, b = ex.relations
            for (rel, perm), chain in why.items():
                if rel == a and (b, perm) in why:
                    steps = [r.to_dict() for r in (*chain, *why[(b, perm)], ex)]
                    args = ", ".join(f"x{i}" for i in perm)
                    raise RuleConflictError(
                        f"the rules contradict each other: {source} would imply both {a}({args}) and "
                        f"{b}({args}), which are mutually exclusive, so {source} could hold for no "
                        f"arguments; rules involved: {steps}"
                    )


def excluded_by(
    rules: Sequence[Rule], arity: Mapping[str, int]
) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """What each relation's facts make false: ``{r: [(s, perm), ..]}`` means r(x) implies
    not s(x[perm[0]], x[perm[1]], ..), through implications then an exclusion."""
    exclusions = [r for r in rules if isinstance(r, Exclusion)]
    if not exclusions:
        return {}
    edges = _implications(rules, arity)
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for source in sorted(arity):
        found = set()
        for rel, perm in _closure(source, edges, arity[source]):
            for ex in exclusions:
                for a, b in (ex.relations, ex.relations[::-1]):
                    if rel == a:
                        found.add((b, perm))
        if found:
            out[source] = sorted(found)
    return out
