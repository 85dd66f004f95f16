"""Rule injection for BoxE (Abboud et al. 2020, section 5): rules enforced by construction.

Five kinds of rule, over relations named as in the memory:

| rule | meaning | construction on the boxes |
|---|---|---|
| ``Hierarchy(p, c)`` | p(x..) => c(x..) | c's box at each position is the smallest box holding c's own and p's |
| ``Intersection((p1, p2, ..), c)`` | p1(x..) & p2(x..) => c(x..) | c's box also holds the intersection of the p's boxes (when not empty) |
| ``Symmetry(r)`` | r(x, y) => r(y, x) | r's two boxes are one (tied parameters) |
| ``Inversion(r, s)`` | r(x, y) <=> s(y, x) | s's head box is r's tail box and vice versa |
| ``Exclusion((r, s))`` | r(x..) & s(x..) => false | on one coordinate of one position, r's box lies below a learned separator and s's above |

Hierarchy and intersection are the reference code's "box union" (``RuleParser.enforce_rule``);
symmetry and inversion its tied boxes; exclusion, which the reference code does not
implement, is a separating hyperplane: a point cannot be on both sides of it, so no tuple
can fall in both relations' boxes. Everything below an excluded box (what implies it) is
clipped with it, so hierarchies keep holding. Since a fact is true when each argument's
point lies in its box, a fact implied by the rules lies inside the implied relation's boxes
as soon as its premises lie inside theirs: it scores as true without being trained on.

A set of rules contradicts itself when it forces some relation to be empty (it would
imply two mutually exclusive relations on the same arguments); ``compile_rules`` rejects
such sets with a ``RuleConflictError`` naming the relation and the chain of rules.

The rule types, their parsing and that logical check are ``rule_logic.py``'s (re-exported
here); this module compiles rules into the constructions on the boxes (``RulePlan``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import ArityError, RuleConflictError, UnknownRelationError
from .rule_logic import (
    Exclusion,
    Hierarchy,
    Intersection,
    Inversion,
    Rule,
    Symmetry,
    check_consistent,
    excluded_by,
    parse_rule,
    required_arity,
)

__all__ = [
    "Exclusion",
    "Hierarchy",
    "Intersection",
    "Inversion",
    "Rule",
    "RulePlan",
    "Symmetry",
    "compile_rules",
    "excluded_by",
    "parse_rule",
]


# --- the geometric plan -------------------------------------------------------------------------
class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the smaller slot stays the representative


@dataclass
class RulePlan:
    """Compiled rules: how raw boxes (one per relation and argument position, a "slot")
    become the effective boxes that score facts. Built by ``compile_rules``.

    Slots are numbered ``relation * max_arity + position``; slots whose boxes are tied
    form one class, whose raw box is its smallest slot's. ``apply`` then grows each class
    to hold the classes it is implied by (hulls), and clips classes at the exclusions'
    separators, repeating until nothing changes (``passes`` sweeps bound that).
    """

    slot_class: Tensor  # (S,) class of each slot
    class_rep: Tensor  # (C,) slot whose raw parameters a class uses
    hull_child: Tensor  # (H,) class contained in ...
    hull_parent: Tensor  # (H,) ... this class
    meet_operands: Tensor  # (I, K) classes whose intersection is contained in ...
    meet_target: Tensor  # (I,) ... this class
    clip_index: Tensor  # (Q,) flat index class * dim + coordinate of a clipped coordinate
    clip_separator: Tensor  # (Q,) which separator clips it
    clip_below: Tensor  # (Q,) bool: the box lies below the separator (else above)
    separators: int  # how many separators (one per exclusion rule)
    passes: int | None  # sweeps of hulls and clips that reach the fixed point; None: until unchanged
    exclusion_sites: list[tuple[int, int]] = field(
        default_factory=list
    )  # (position, coordinate) per exclusion

    @property
    def ties(self) -> bool:
        return bool(self.class_rep.numel() != self.slot_class.numel())

    def to(self, device: torch.device) -> RulePlan:
        for name in (
            "slot_class",
            "class_rep",
            "hull_child",
            "hull_parent",
            "meet_operands",
            "meet_target",
            "clip_index",
            "clip_separator",
            "clip_below",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _clip(self, low: Tensor, high: Tensor, separators: Tensor) -> tuple[Tensor, Tensor]:
        if self.clip_index.numel() == 0:
            return low, high
        shape = low.shape
        low, high = low.reshape(-1), high.reshape(-1)
        s = separators[self.clip_separator]
        below, above = self.clip_below, ~self.clip_below
        # below: both corners at most s; above: both at least s (a box never straddles s)
        low = low.scatter_reduce(0, self.clip_index[below], s[below], "amin")
        high = high.scatter_reduce(0, self.clip_index[below], s[below], "amin")
        low = low.scatter_reduce(0, self.clip_index[above], s[above], "amax")
        high = high.scatter_reduce(0, self.clip_index[above], s[above], "amax")
        return low.view(shape), high.view(shape)

    def apply(self, low: Tensor, high: Tensor, separators: Tensor) -> tuple[Tensor, Tensor]:
        """Effective boxes from raw ones.

        Arguments:
            low, high: (R, A, d) raw box corners per relation and position (pre-tanh).
            separators: (X,) the exclusions' learned separators.

        Returns:
            (low, high), each (R, A, d), satisfying every rule by construction.
        """
        R, A, d = low.shape
        c_low = low.reshape(R * A, d)[self.class_rep]  # (C, d)
        c_high = high.reshape(R * A, d)[self.class_rep]
        c_low, c_high = self._clip(c_low, c_high, separators)
        hull_index = self.hull_parent.unsqueeze(1).expand(-1, d)
        meet_index = self.meet_target.unsqueeze(1).expand(-1, d)
        cyclic = self.passes is None  # rules in a cycle: sweep until nothing moves
        for _ in range(2 * len(self.class_rep) + 1 if cyclic else self.passes):
            n_low, n_high = c_low, c_high
            if self.hull_child.numel():
                n_low = n_low.scatter_reduce(0, hull_index, c_low[self.hull_child], "amin")
                n_high = n_high.scatter_reduce(0, hull_index, c_high[self.hull_child], "amax")
            if self.meet_target.numel():
                m_low = c_low[self.meet_operands].amax(1)  # (I, d)
                m_high = c_high[self.meet_operands].amin(1)
                empty = (m_high < m_low).any(-1, keepdim=True)  # an empty intersection implies nothing
                m_low = torch.where(empty, torch.full_like(m_low, torch.inf), m_low)
                m_high = torch.where(empty, torch.full_like(m_high, -torch.inf), m_high)
                n_low = n_low.scatter_reduce(0, meet_index, m_low, "amin")
                n_high = n_high.scatter_reduce(0, meet_index, m_high, "amax")
            n_low, n_high = self._clip(n_low, n_high, separators)
            settled = cyclic and torch.equal(n_low, c_low) and torch.equal(n_high, c_high)
            c_low, c_high = n_low, n_high
            if settled:
                break
        return c_low[self.slot_class].view(R, A, d), c_high[self.slot_class].view(R, A, d)


def _longest_path(n: int, edges: Iterable[tuple[int, int]]) -> int | None:
    """Edges on the longest path of a DAG over n nodes, None when there is a cycle."""
    succ: dict[int, set[int]] = {}
    indeg = [0] * n
    for a, b in set(edges):
        if b not in succ.setdefault(a, set()):
            succ[a].add(b)
            indeg[b] += 1
    depth = [0] * n
    queue = deque(i for i in range(n) if indeg[i] == 0)
    seen = 0
    while queue:
        a = queue.popleft()
        seen += 1
        for b in succ.get(a, ()):
            depth[b] = max(depth[b], depth[a] + 1)
            indeg[b] -= 1
            if indeg[b] == 0:
                queue.append(b)
    return max(depth, default=0) if seen == n else None


def _check_rule_arities(rules: Sequence[Rule], relations: Mapping[str, int], arities: Sequence[int]) -> None:
    """Every rule names known relations of one arity (binary where the rule needs it)."""
    for rule in rules:
        for name in rule.relations:
            if name not in relations:
                raise UnknownRelationError(name)
        ar = {arities[relations[n]] for n in rule.relations}
        need = required_arity(rule)
        if need is not None and ar != {need}:
            raise ArityError(
                f"{rule.to_dict()}: {type(rule).__name__.lower()} needs binary relations, "
                f"got arities {sorted(ar)}"
            )
        if len(ar) != 1:
            raise ArityError(f"{rule.to_dict()}: its relations have different arities {sorted(ar)}")


def _tie_slots(
    rules: Sequence[Rule], slot: Callable[[str, int], int], n_slots: int
) -> tuple[list[int], list[int]]:
    """Box slots tied by symmetry and inversion: each slot's class, and each class's first slot."""
    ties = _UnionFind(n_slots)
    for rule in rules:
        if isinstance(rule, Symmetry):
            ties.union(slot(rule.relation, 0), slot(rule.relation, 1))
        elif isinstance(rule, Inversion):
            ties.union(slot(rule.relation, 0), slot(rule.inverse, 1))
            ties.union(slot(rule.relation, 1), slot(rule.inverse, 0))
    roots = sorted({ties.find(s) for s in range(n_slots)})
    class_of_root = {r: c for c, r in enumerate(roots)}
    return [class_of_root[ties.find(s)] for s in range(n_slots)], roots


def _containments(
    rules: Sequence[Rule], arity_of: Mapping[str, int], cls: Callable[[str, int], int]
) -> tuple[list[tuple[int, int]], list[tuple[list[int], int]], list[tuple[int, int]]]:
    """Hierarchy hulls (child class, parent class), intersection meets (operand classes, target
    class) and the "below" edges (x, y): whatever clips y clips x too."""
    hull: list[tuple[int, int]] = []
    meets: list[tuple[list[int], int]] = []
    below_edges: list[tuple[int, int]] = []
    for rule in rules:
        for p in range(arity_of[rule.relations[0]]):
            if isinstance(rule, Hierarchy) and cls(rule.premise, p) != cls(rule.conclusion, p):
                hull.append((cls(rule.premise, p), cls(rule.conclusion, p)))
                below_edges.append(hull[-1])
            elif isinstance(rule, Intersection):
                operands = [cls(r, p) for r in rule.premises]
                meets.append((operands, cls(rule.conclusion, p)))
                # the intersection must obey the conclusion's clips: its first operand does
                if operands[0] != cls(rule.conclusion, p):
                    below_edges.append((operands[0], cls(rule.conclusion, p)))
    return hull, meets, below_edges


def _below(below_edges: Sequence[tuple[int, int]]) -> Callable[[int], set[int]]:
    """c -> every class at or below c along the "below" edges."""
    preds: dict[int, set[int]] = {}
    for x, y in below_edges:
        preds.setdefault(y, set()).add(x)

    def down(c: int) -> set[int]:
        out, stack = {c}, [c]
        while stack:
            for x in preds.get(stack.pop(), ()):
                if x not in out:
                    out.add(x)
                    stack.append(x)
        return out

    return down


def _place_exclusions(
    exclusions: Sequence[Exclusion],
    arity_of: Mapping[str, int],
    cls: Callable[[str, int], int],
    down: Callable[[int], set[int]],
    dim: int,
) -> tuple[list[tuple[int, int, bool]], list[tuple[int, int]]]:
    """A separator per exclusion: the clips (class * dim + coordinate, separator, below) and
    each exclusion's site (argument position, coordinate)."""
    side: dict[tuple[int, int], bool] = {}  # (class, coordinate) -> below?
    clips: list[tuple[int, int, bool]] = []
    sites: list[tuple[int, int]] = []
    for e, rule in enumerate(exclusions):
        site = _exclusion_site(e, rule, arity_of, cls, down, side, dim)
        if site is None:
            raise RuleConflictError(
                f"{rule.to_dict()}: cannot be enforced with the other rules: every argument position and "
                f"coordinate would put one box on both sides of a separator (too many exclusions for dim "
                f"{dim}, or an exclusion that holds only through an intersection rule)"
            )
        p, k, low_side, high_side = site
        sites.append((p, k))
        for x in sorted(low_side):
            side[(x, k)] = True
            clips.append((x * dim + k, e, True))
        for y in sorted(high_side):
            side[(y, k)] = False
            clips.append((y * dim + k, e, False))
    return clips, sites


def _exclusion_site(
    e: int,
    rule: Exclusion,
    arity_of: Mapping[str, int],
    cls: Callable[[str, int], int],
    down: Callable[[int], set[int]],
    side: Mapping[tuple[int, int], bool],
    dim: int,
) -> tuple[int, int, set[int], set[int]] | None:
    """The first (position, coordinate) where exclusion ``e`` can put its two relations' boxes
    (and all below them) on the two sides of a separator without contradicting earlier
    exclusions; None where there is none."""
    a, b = rule.relations
    for p in range(arity_of[a]):
        low_side, high_side = down(cls(a, p)), down(cls(b, p))
        if low_side & high_side:
            continue
        for j in range(dim):
            k = (e + j) % dim
            if all(side.get((x, k), True) for x in low_side) and all(
                not side.get((y, k), False) for y in high_side
            ):
                return p, k, low_side, high_side
    return None


def compile_rules(
    rules: Sequence[Rule], relations: Mapping[str, int], arities: Sequence[int], max_arity: int, dim: int
) -> RulePlan:
    """Check the rules and build the plan that enforces them.

    Arguments:
        rules: parsed rules (``parse_rule``).
        relations: relation name -> index.
        arities: arity of each relation, by index.
        max_arity: A, the slots per relation.
        dim: d, the embedding dimension (exclusions each take one coordinate).

    Raises:
        UnknownRelationError: a rule names a relation not in ``relations``.
        ArityError: a rule joins relations of different arities, or symmetry/inversion
            on a relation that is not binary.
        RuleConflictError: the rules force a relation to be empty, or an exclusion cannot
            be placed (e.g. more exclusions than coordinates on one relation).
    """
    _check_rule_arities(rules, relations, arities)
    arity_of = {name: arities[i] for name, i in relations.items()}
    check_consistent(rules, arity_of)

    def slot(name: str, position: int) -> int:
        return relations[name] * max_arity + position

    slot_class, roots = _tie_slots(rules, slot, len(arities) * max_arity)

    def cls(name: str, position: int) -> int:
        return slot_class[slot(name, position)]

    hull, meets, below_edges = _containments(rules, arity_of, cls)
    n_classes = len(roots)
    exclusions = [r for r in rules if isinstance(r, Exclusion)]
    clips, sites = _place_exclusions(exclusions, arity_of, cls, _below(below_edges), dim)

    depth = _longest_path(n_classes, hull + [(o, t) for ops, t in meets for o in ops])
    width = max((len(ops) for ops, _ in meets), default=1)
    meet_ops = [ops + [ops[0]] * (width - len(ops)) for ops, _ in meets]  # pad: x & x = x
    long = torch.long
    return RulePlan(
        slot_class=torch.tensor(slot_class, dtype=long),
        class_rep=torch.tensor(roots, dtype=long),
        hull_child=torch.tensor([c for c, _ in hull], dtype=long),
        hull_parent=torch.tensor([p for _, p in hull], dtype=long),
        meet_operands=torch.tensor(meet_ops, dtype=long).view(len(meets), width),
        meet_target=torch.tensor([t for _, t in meets], dtype=long),
        clip_index=torch.tensor([i for i, _, _ in clips], dtype=long),
        clip_separator=torch.tensor([s for _, s, _ in clips], dtype=long),
        clip_below=torch.tensor([b for _, _, b in clips], dtype=torch.bool),
        separators=len(exclusions),
        passes=depth,
        exclusion_sites=sites,
    )
