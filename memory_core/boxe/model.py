"""BoxE relational memory: entities as points, relations as boxes (Abboud et al., NeurIPS 2020).

The memory holds its vocabulary (entity and relation names, each relation's arity), its
facts, its rules and the embeddings; names are mapped to indices inside it, so callers
speak in names only. Facts are ``(relation, [arg_1, .., arg_n])`` or
``{"relation": ..., "args": [...]}``; entities and relations are created on first use,
and a relation's arity is fixed by its first fact (or rule).

Parameters (float32): each entity has a base position and a translational bump (E, d);
each relation has one box per argument position, given by a centre (R, A, d), a shape
(R, A, d) of which only the proportions count, and a scale (R, A) (``geometry.box_bounds``).
A = the largest arity; slots past a relation's arity are unused. Rules turn these raw
boxes into effective ones (``rules.RulePlan``); each exclusion rule adds one separator.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..checks import resolve_device
from .checkpoint import load as _load
from .checkpoint import save as _save
from .config import PARAM_NAMES, BoxEConfig
from .errors import ArityError, UnknownEntityError, UnknownRelationError
from .evaluate import filtered_ranks, rank_metrics
from .facts import FactIndex, FactStore
from .geometry import box_bounds, fact_scores
from .rules import Rule, RulePlan, compile_rules, excluded_by, parse_rule, required_arity
from .training import fit as _fit

__all__ = ["PARAM_NAMES", "BoxE", "BoxEConfig", "Fact"]

Fact = tuple[str, Sequence[str]] | Mapping  # (relation, args) or {"relation": .., "args": [..]}


def _parse_fact(fact: Fact) -> tuple[str, tuple[str, ...]]:
    if isinstance(fact, Mapping):
        if set(fact) != {"relation", "args"}:
            raise ValueError(f"a fact mapping has exactly the keys 'relation' and 'args', got {sorted(fact)}")
        relation, args = fact["relation"], fact["args"]
    elif isinstance(fact, tuple | list) and len(fact) == 2:
        relation, args = fact
    else:
        raise ValueError(f"a fact is (relation, [args]) or {{'relation', 'args'}}, got {fact!r}")
    if not isinstance(relation, str) or not relation:
        raise ValueError(f"a relation is a non-empty string, got {relation!r}")
    if isinstance(args, str) or not isinstance(args, Sequence) or len(args) == 0:
        raise ValueError(f"args of {relation!r} must be a non-empty list of entity names, got {args!r}")
    for a in args:
        if not isinstance(a, str) or not a:
            raise ValueError(f"an entity is a non-empty string, got {a!r} in a fact of {relation!r}")
    return relation, tuple(args)


class BoxE:
    """A relational memory: stores facts r(e_1, .., e_n) of any arity, completes a fact
    with one missing argument, and keeps the rules it is given true by construction.

    Arguments:
        dim: embedding dimension (shortcut for ``config.dim``).
        rules: rules to inject (``rules.parse_rule`` forms); see ``add_rules``.
        device: "auto" (CUDA when present), "cpu" or "cuda[:n]".
        config: a ``BoxEConfig``; keyword arguments override its fields.
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        rules: Iterable[Rule | Mapping] = (),
        device: str | torch.device = "auto",
        config: BoxEConfig | None = None,
        **overrides,
    ):
        base = (config or BoxEConfig()).to_dict()
        if dim is not None:
            overrides["dim"] = dim
        self.config = BoxEConfig.from_dict({**base, **overrides})
        self.device = resolve_device(device)
        self._entities: list[str] = []
        self._entity_index: dict[str, int] = {}
        self._relations: list[str] = []
        self._relation_index: dict[str, int] = {}
        self._arity: list[int] = []
        self.facts = FactStore(max_arity=1)
        self._rules: list[Rule] = []
        self._plan: RulePlan | None = None
        self._arity_cache: Tensor | None = None
        self._excluded_cache: tuple = (None, None)  # (key, FactIndex of facts the rules refute)
        self._growths = 0  # seeds each growth's initial values: same calls, same model
        self.epochs_done = 0
        self.trained_facts = 0  # facts stored when fit last finished
        self._opt: torch.optim.Adam | None = None
        d = self.config.dim
        self.entity_base = torch.zeros(0, d, device=self.device)
        self.entity_bump = torch.zeros(0, d, device=self.device)
        self.box_centre = torch.zeros(0, 1, d, device=self.device)
        self.box_shape = torch.zeros(0, 1, d, device=self.device)
        self.box_scale = torch.zeros(0, 1, device=self.device)
        self.separators = torch.zeros(0, device=self.device)
        self.add_rules(rules)

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def entities(self) -> list[str]:
        return list(self._entities)

    @property
    def relations(self) -> dict[str, int]:
        """Relation name -> arity."""
        return dict(zip(self._relations, self._arity))

    @property
    def rules(self) -> list[dict]:
        return [r.to_dict() for r in self._rules]

    @property
    def max_arity(self) -> int:
        return self.box_centre.shape[1]

    @property
    def is_trained(self) -> bool:
        return self.epochs_done > 0

    def __len__(self) -> int:
        return len(self.facts)

    def __repr__(self) -> str:
        return (
            f"BoxE(dim={self.config.dim}, entities={len(self._entities)}, relations={len(self._relations)}, "
            f"facts={len(self.facts)}, rules={len(self._rules)}, device={self.device})"
        )

    def entity_id(self, name: str) -> int:
        try:
            return self._entity_index[name]
        except KeyError:
            raise UnknownEntityError(name) from None

    def relation_id(self, name: str) -> int:
        try:
            return self._relation_index[name]
        except KeyError:
            raise UnknownRelationError(name) from None

    def parameters(self) -> list[Tensor]:
        return [getattr(self, name) for name in PARAM_NAMES]

    def _check_arities(self, wanted: Mapping[str, int]) -> None:
        """Raise ArityError where a known relation is given another arity."""
        for name, n in wanted.items():
            if name in self._relation_index and self._arity[self._relation_index[name]] != n:
                have = self._arity[self._relation_index[name]]
                raise ArityError(f"relation {name!r} takes {have} argument{'s' * (have != 1)}, got {n}")

    def _grow(self, entities: Sequence[str], relations: Mapping[str, int], separators: int) -> None:
        """Append entities and relations (name -> arity) and grow the exclusions' separators
        to ``separators``; new rows start as in the reference code, old rows are kept."""
        d, dev = self.config.dim, self.device
        E, R = len(self._entities) + len(entities), len(self._relations) + len(relations)
        A = max([self.max_arity, *relations.values()])
        X = max(separators, len(self.separators))
        if (E, R, A, X) == (len(self._entities), len(self._relations), self.max_arity, len(self.separators)):
            return
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self._growths)
        self._growths += 1
        bound = 0.5 / math.sqrt(d)

        def grown(old: Tensor, shape: tuple[int, ...], low: float, high: float) -> Tensor:
            new = torch.empty(shape).uniform_(low, high, generator=gen).to(dev)
            new[tuple(slice(0, n) for n in old.shape)] = old.detach()
            return new

        self.entity_base = grown(self.entity_base, (E, d), -bound, bound)
        self.entity_bump = grown(self.entity_bump, (E, d), -bound, bound)
        self.box_centre = grown(self.box_centre, (R, A, d), -bound, bound)
        self.box_shape = grown(self.box_shape, (R, A, d), -bound, bound)
        self.box_scale = grown(self.box_scale, (R, A), -1.0, 1.0)
        self.separators = grown(self.separators, (X,), 0.0, 0.0)
        for name in entities:
            self._entity_index[name] = len(self._entities)
            self._entities.append(name)
        for name, n in relations.items():
            self._relation_index[name] = len(self._relations)
            self._relations.append(name)
            self._arity.append(n)
        self.facts.max_arity = A
        self._opt = None  # shapes changed: Adam restarts (its moments of old rows would mislead new ones)

    # --- facts and rules ------------------------------------------------------------------------
    def check_facts(self, facts: Iterable[Fact]) -> list[tuple[str, tuple[str, ...]]]:
        """Validate facts without storing anything; returns them as (relation, args).

        Raises ValueError for a malformed fact and ArityError for a relation given another
        arity than it has (or two arities in one batch): what ``add_facts`` would refuse.
        """
        parsed = [_parse_fact(f) for f in facts]
        arities: dict[str, int] = {}
        for relation, args in parsed:
            known = arities.setdefault(relation, len(args))
            if known != len(args):
                raise ArityError(
                    f"relation {relation!r} is given {known} and {len(args)} arguments in one batch"
                )
        self._check_arities(arities)
        return parsed

    def add_facts(self, facts: Iterable[Fact]) -> int:
        """Store facts, creating unseen entities and relations; returns how many were new.

        All facts are checked first (``check_facts``): a bad one raises and stores nothing.
        """
        parsed = self.check_facts(facts)
        arities = {relation: len(args) for relation, args in parsed}
        new_entities = list(
            dict.fromkeys(a for _, args in parsed for a in args if a not in self._entity_index)
        )
        new_relations = {r: n for r, n in arities.items() if r not in self._relation_index}
        self._grow(new_entities, new_relations, len(self.separators))
        if new_relations and self._rules:
            self._plan = self._compile(self._rules)
        rows = [(self._relation_index[r], *(self._entity_index[a] for a in args)) for r, args in parsed]
        return self.facts.add(rows)

    def remove_facts(self, facts: Iterable[Fact]) -> int:
        """Forget stored facts; returns how many were stored. Facts that are not stored
        (unknown names included) are skipped; entities, relations and embeddings stay."""
        rows = []
        for relation, args in map(_parse_fact, facts):
            r = self._relation_index.get(relation)
            ids = [self._entity_index.get(a) for a in args]
            if r is not None and None not in ids:
                rows.append((r, *ids))
        return self.facts.remove(rows)

    def stored_facts(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every stored fact as (relation, args), in storage order."""
        names = self._entities
        return [(self._relations[row[0]], tuple(names[e] for e in row[1:])) for row in self.facts.rows()]

    def add_rules(self, rules: Iterable[Rule | Mapping]) -> None:
        """Inject rules (``rules.parse_rule`` forms). Relations a rule names that do not exist
        yet are created: binary for symmetry and inversion, else with the arity of the rule's
        known relations, else binary. The whole set (old and new) is checked first; on a
        RuleError / RuleConflictError / ArityError nothing changes."""
        parsed = [parse_rule(r) for r in rules]
        parsed = [r for r in dict.fromkeys(parsed) if r not in self._rules]
        if not parsed:
            return
        new: dict[str, int] = {}
        for rule in parsed:
            known = [
                self._arity[self._relation_index[n]] for n in rule.relations if n in self._relation_index
            ]
            known += [new[n] for n in rule.relations if n in new]
            arity = required_arity(rule) or (known[0] if known else 2)
            for name in rule.relations:
                if name not in self._relation_index and name not in new:
                    new[name] = arity
        names = {**self._relation_index, **{n: len(self._relations) + i for i, n in enumerate(new)}}
        arities = self._arity + list(new.values())
        A = max([self.max_arity, *new.values()])
        compile_rules([*self._rules, *parsed], names, arities, A, self.config.dim)  # raises, nothing changed
        exclusions = sum(r.to_dict()["type"] == "exclusion" for r in [*self._rules, *parsed])
        self._grow([], new, exclusions)
        self._rules.extend(parsed)
        self._plan = self._compile(self._rules)
        self._opt = None  # tied boxes change which parameters are in use

    def excluded_rows(self) -> Tensor:
        """(P, 1 + A) the facts the rules make false given the stored ones (an exclusion
        reached through implications), minus any stored as true. Training uses them as
        negatives: disjoint boxes alone leave a soft score that generalisation can still
        make high (docs/science/boxe.md)."""
        table = excluded_by(self._rules, self.relations)
        found: dict[tuple[int, ...], None] = {}
        if table:
            for row in self.facts.rows():
                for other, perm in table.get(self._relations[row[0]], ()):
                    new = (self._relation_index[other], *(row[1 + j] for j in perm))
                    if new not in self.facts:
                        found[new] = None
        padded = [row + (-1,) * (self.max_arity + 1 - len(row)) for row in found]
        return torch.tensor(padded, dtype=torch.long).view(len(padded), 1 + self.max_arity)

    def _compile(self, rules: list[Rule]) -> RulePlan:
        return compile_rules(rules, self._relation_index, self._arity, self.max_arity, self.config.dim).to(
            self.device
        )

    def encode(self, facts: Iterable[Fact]) -> Tensor:
        """(N, 1 + A) int64 rows of known relations and entities (raises for unknown names
        or a wrong arity)."""
        rows = []
        for relation, args in map(_parse_fact, facts):
            r = self.relation_id(relation)
            if len(args) != self._arity[r]:
                raise ArityError(f"relation {relation!r} takes {self._arity[r]} arguments, got {len(args)}")
            rows.append((r, *(self.entity_id(a) for a in args)) + (-1,) * (self.max_arity - len(args)))
        return torch.tensor(rows, dtype=torch.long).view(len(rows), 1 + self.max_arity)

    # --- scoring --------------------------------------------------------------------------------
    def copy(self) -> BoxE:
        """An independent deep copy (embeddings, facts, rules, Adam's state): e.g. train
        the copy in the background while the original answers queries, then swap."""
        return copy.deepcopy(self)

    def to(self, device: str | torch.device) -> BoxE:
        self.device = resolve_device(device)
        for name in PARAM_NAMES:
            setattr(self, name, getattr(self, name).detach().to(self.device))
        if self._plan is not None:
            self._plan.to(self.device)
        self._opt = None
        return self

    def boxes(self) -> tuple[Tensor, Tensor]:
        """(low, high), each (R, A, d): every relation's effective boxes, before tanh."""
        low, high = box_bounds(self.box_centre, self.box_shape, self.box_scale)
        if self._plan is not None:
            low, high = self._plan.apply(low, high, self.separators)
        return low, high

    def _arity_of(self, relations: Tensor) -> Tensor:
        """(B,) the arities of relations (B,), on their device."""
        cached = self._arity_cache
        if cached is None or len(cached) != len(self._arity) or cached.device != relations.device:
            cached = self._arity_cache = torch.tensor(self._arity, dtype=torch.long, device=relations.device)
        return cached[relations]

    def _score_rows(
        self, relations: Tensor, args: Tensor, boxes: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """Scores of facts given as rows.

        Arguments:
            relations: (B,) relation indices.
            args: (B, M, A) M argument rows per relation (e.g. a fact and its negatives),
                padded with -1 past the relation's arity.
            boxes: ``self.boxes()`` when the caller already has them.

        Returns:
            (B, M) scores (0 best).
        """
        low, high = self.boxes() if boxes is None else boxes
        mask = torch.arange(self.max_arity, device=args.device) < self._arity_of(relations).unsqueeze(
            1
        )  # (B, A)
        idx = args.clamp_min(0)
        bump = self.entity_bump[idx] * mask[:, None, :, None]  # (B, M, A, d)
        points = (
            self.entity_base[idx] + bump.sum(2, keepdim=True) - bump
        )  # each argument bumped by the others
        return fact_scores(
            points,
            low[relations].unsqueeze(1),
            high[relations].unsqueeze(1),
            mask.unsqueeze(1),
            self.config.norm,
            self.config.tanh,
        )

    def _candidate_scores(
        self, relations: Tensor, args: Tensor, position: int, chunk: int = 1 << 18
    ) -> Tensor:
        """(B, E) the score of every entity placed at ``position`` of facts (B, A) whose other
        arguments are given; entities are taken in chunks of about ``chunk`` floats per tensor
        (1 MB: the dozen elementwise passes over a chunk then stay in the CPU's cache)."""
        low, high = self.boxes()
        low, high = low[relations], high[relations]  # (B, A, d)
        B, A = args.shape
        mask = torch.arange(A, device=args.device) < self._arity_of(relations).unsqueeze(1)  # (B, A)
        others = mask.clone()
        others[:, position] = False
        idx = args.clamp_min(0)
        bump = self.entity_bump[idx] * others.unsqueeze(-1)  # (B, A, d), 0 at the candidate's position
        total = bump.sum(1)  # (B, d) the given arguments' bumps
        fixed = self.entity_base[idx] + total.unsqueeze(1) - bump  # (B, A, d) before the candidate's bump
        E = len(self._entities)
        step = max(1, chunk // max(1, B * A * self.config.dim))
        out = []
        for start in range(0, E, step):
            cand = torch.arange(start, min(E, start + step), device=args.device)
            base, cbump = self.entity_base[cand], self.entity_bump[cand]  # (C, d)
            # the candidate sits at `position` (its base, the others' bumps) and bumps the others
            points = fixed.unsqueeze(1) + cbump[None, :, None, :] * others[:, None, :, None]  # (B, C, A, d)
            points[:, :, position] = base.unsqueeze(0) + total.unsqueeze(1)
            out.append(
                fact_scores(
                    points,
                    low.unsqueeze(1),
                    high.unsqueeze(1),
                    mask.unsqueeze(1),
                    self.config.norm,
                    self.config.tanh,
                )
            )
        return torch.cat(out, 1)

    @torch.no_grad()
    def score(self, facts: Iterable[Fact]) -> Tensor:
        """(N,) scores of facts over known names: -sum of distances, 0 = every argument at
        its box's centre; higher is truer."""
        rows = self.encode(facts).to(self.device)
        return self._score_rows(rows[:, 0], rows[:, 1:].unsqueeze(1)).squeeze(1)

    @torch.no_grad()
    def holds(self, facts: Iterable[Fact]) -> Tensor:
        """(N,) bool: every argument's point lies inside its box, i.e. the model says true.
        For facts implied by the rules this follows from their premises holding."""
        rows = self.encode(facts).to(self.device)
        rel, args = rows[:, 0], rows[:, 1:]
        low, high = self.boxes()
        mask = torch.arange(self.max_arity, device=args.device) < self._arity_of(rel).unsqueeze(1)
        idx = args.clamp_min(0)
        bump = self.entity_bump[idx] * mask.unsqueeze(-1)
        points = self.entity_base[idx] + bump.sum(1, keepdim=True) - bump
        lo, hi = low[rel], high[rel]
        if self.config.tanh:
            points, lo, hi = points.tanh(), lo.tanh(), hi.tanh()
        inside = ((points >= lo) & (points <= hi)).all(-1) | ~mask  # (N, A)
        return inside.all(-1)

    # --- completion -----------------------------------------------------------------------------
    @torch.no_grad()
    def complete(
        self, relation: str, args: Sequence[str | None], k: int | None = None, filter_known: bool = False
    ) -> list[tuple[str, float]]:
        """Rank every entity as the missing argument of a fact.

        Arguments:
            relation: a known relation.
            args: its arguments, exactly one of them None (the one asked for).
            k: how many candidates to return (None: every entity).
            filter_known: leave out entities that complete a stored fact.

        Returns:
            [(entity, score), ...] best first (ties in entity order), except that
            candidates the rules prove false from the stored facts (an exclusion) come
            after all others: the embedding scores them low, deduction makes it certain.
        """
        r = self.relation_id(relation)
        if isinstance(args, str) or not isinstance(args, Sequence):
            raise TypeError(f"args must be a list with one null, got {args!r}")
        if len(args) != self._arity[r]:
            raise ArityError(f"relation {relation!r} takes {self._arity[r]} arguments, got {len(args)}")
        holes = [i for i, a in enumerate(args) if a is None]
        if len(holes) != 1:
            raise ValueError(f"exactly one argument must be null (the one to complete), got {len(holes)}")
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
        p = holes[0]
        row = [self.entity_id(a) if a is not None else 0 for a in args]
        row += [-1] * (self.max_arity - len(row))
        rel_t = torch.tensor([r], device=self.device)
        scores = self._candidate_scores(rel_t, torch.tensor([row], device=self.device), p)[0].cpu()
        given = tuple(row[: len(args)])
        keep = torch.ones(len(scores), dtype=torch.bool)
        if filter_known:
            keep[self.facts.index().known(r, p, given)] = False
        proven_false = torch.zeros(len(scores), dtype=torch.bool)
        proven_false[self._excluded_index().known(r, p, given)] = True
        order = torch.sort(scores, descending=True, stable=True).indices
        order = torch.cat([order[~proven_false[order]], order[proven_false[order]]])  # refuted ones last
        order = order[keep[order]]
        if k is not None:
            order = order[:k]
        return [(self._entities[i], float(scores[i])) for i in order.tolist()]

    def _excluded_index(self) -> FactIndex:
        key = (self.facts.version, len(self._rules), self.max_arity)
        if self._excluded_cache[0] != key:
            rows = [tuple(x for x in row if x >= 0) for row in self.excluded_rows().tolist()]
            self._excluded_cache = (key, FactIndex(rows))
        return self._excluded_cache[1]

    @torch.no_grad()
    def evaluate(self, facts: Iterable[Fact], also_known: Iterable[Fact] = (), batch_size: int = 256) -> dict:
        """Filtered link prediction on test facts (``evaluate.filtered_ranks``): each argument
        of each fact ranked among all entities, stored facts, the test facts and
        ``also_known`` (e.g. the validation set) filtered out.

        Returns:
            {"mrr", "hits@1", "hits@3", "hits@10", "mean_rank", "count"}.
        """
        rows = self.encode(facts)
        extra = self.encode(also_known)
        unpadded = [tuple(x for x in r if x >= 0) for r in torch.cat([rows, extra]).tolist()]
        index = FactIndex(self.facts.rows() + unpadded)
        ranks = filtered_ranks(
            lambda rel, args, p: self._candidate_scores(rel, args, p),
            rows.to(self.device),
            self._arity_of(rows[:, 0]).to(self.device),
            index,
            len(self._entities),
            batch_size,
        )
        return rank_metrics(ranks)

    # --- training and persistence (training.py, checkpoint.py) ------------------------------------
    def fit(
        self,
        epochs: int | None = None,
        progress: bool = True,
        callback: Callable[[dict], bool | None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        """Train on every stored fact; resumes from the current embeddings. See
        ``training.fit`` for the arguments; returns its ``FitHistory``."""
        return _fit(self, epochs, progress=progress, callback=callback, should_stop=should_stop)

    def save(self, path) -> None:
        """Write the whole memory (see ``checkpoint.save``)."""
        _save(self, path)

    @classmethod
    def load(cls, path, device: str | torch.device = "auto") -> BoxE:
        """Read a memory written by ``save`` (see ``checkpoint.load``)."""
        return _load(path, device, cls)
