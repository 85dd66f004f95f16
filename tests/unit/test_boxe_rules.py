"""Rule injection: the construction holds for any parameters, a trained memory ranks the
facts the rules imply first and the facts they exclude last, contradictions are refused."""

from __future__ import annotations

import random

import pytest
import torch

from memory_core.boxe import ArityError, BoxE, RuleConflictError, RuleError, UnknownRelationError

pytestmark = pytest.mark.usefixtures("one_thread")

RULES = [
    {"type": "hierarchy", "premise": "a", "conclusion": "b"},
    {"type": "symmetry", "relation": "s"},
    {"type": "inversion", "relation": "i1", "inverse": "i2"},
    {"type": "intersection", "premises": ["c1", "c2"], "conclusion": "c3"},
    {"type": "exclusion", "relations": ["x1", "x2"]},
]


def _pairs(rng: random.Random, entities: list[str], n: int) -> list[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    while len(out) < n:
        h, t = rng.sample(entities, 2)
        out.add((h, t))
    return sorted(out)


def synthetic_kb() -> dict:
    """Random binary facts over 30 entities for each rule's relations; the facts the rules
    imply are left out of the training data."""
    rng = random.Random(0)
    ents = [f"e{i}" for i in range(30)]
    kb = {
        "a": _pairs(rng, ents, 20),
        "b": _pairs(rng, ents, 20),
        "s": _pairs(rng, ents, 20),
        "i1": _pairs(rng, ents, 20),
        "i2": _pairs(rng, ents, 10),
        "c3": _pairs(rng, ents, 15),
    }
    common = _pairs(rng, ents, 10)
    kb["c1"] = common + _pairs(rng, ents, 15)
    kb["c2"] = common + _pairs(rng, ents, 15)
    block = [(h, t) for h in ents[:8] for t in ents[10:18]]  # x2 holds on a block, except where x1 does
    rng.shuffle(block)
    kb["x1"], kb["x2"] = block[:12], block[12:]
    facts = [(r, list(p)) for r, pairs in kb.items() for p in pairs]
    implied = {
        "hierarchy": ("b", kb["a"]),
        "symmetry": ("s", [(t, h) for h, t in kb["s"]]),
        "inversion": ("i2", [(t, h) for h, t in kb["i1"]]),
        "intersection": ("c3", sorted(set(kb["c1"]) & set(kb["c2"]))),
    }
    return {"facts": facts, "kb": kb, "implied": implied}


@pytest.fixture(scope="module")
def trained():
    data = synthetic_kb()
    with_rules = BoxE(dim=32, seed=0, device="cpu", batch_size=128, lr=0.02, rules=RULES)
    with_rules.add_facts(data["facts"])
    with_rules.fit(150, progress=False)
    without = BoxE(dim=32, seed=0, device="cpu", batch_size=128, lr=0.02)
    without.add_facts(data["facts"])
    without.fit(150, progress=False)
    return data, with_rules, without


def _implied_ranks(model: BoxE, relation: str, implied: list[tuple[str, str]], true: set[tuple[str, str]]):
    """Rank of each implied fact r(h, t) among the tails of r(h, ?) that are not true
    (stored or implied): 1 = above every false candidate."""
    ranks = []
    for h, t in implied:
        scores = dict(model.complete(relation, [h, None]))
        false = [s for e, s in scores.items() if (h, e) not in true]
        ranks.append(1 + sum(s > scores[t] for s in false))
    return ranks


@pytest.mark.parametrize("rule", ["hierarchy", "symmetry", "inversion", "intersection"])
def test_implied_facts_rank_first(trained, rule):
    data, with_rules, without = trained
    relation, implied = data["implied"][rule]
    true = set(data["kb"][relation]) | set(implied)
    ranks = _implied_ranks(with_rules, relation, implied, true)
    # soft scores: a premise fitted less well than the others can let one false candidate by
    assert max(ranks) <= 2 and sum(1 / r for r in ranks) / len(ranks) >= 0.9, ranks
    # without the rule the same facts are guesses: the rule is what ranks them first
    baseline = _implied_ranks(without, relation, implied, true)
    assert sum(1 / r for r in baseline) / len(baseline) < 0.6, baseline


def test_excluded_facts_rank_last(trained):
    data, with_rules, _ = trained
    kb = data["kb"]
    for h in sorted({h for h, _ in kb["x1"]}):
        excluded = {t for hh, t in kb["x1"] if hh == h}
        ranking = [e for e, _ in with_rules.complete("x2", [h, None])]
        assert set(ranking[-len(excluded) :]) == excluded
        # the embedding scores them false too (below the margin), not only the ordering
        scores = with_rules.score([("x2", [h, t]) for t in excluded])
        assert (scores < -with_rules.config.margin).all()
    # the disjoint boxes: what x1 holds, x2 cannot
    facts = [("x2", list(p)) for p in kb["x1"]]
    assert not with_rules.holds(facts).any()


def test_construction_holds_for_any_parameters():
    """Effective boxes obey every rule for random raw boxes, before any training."""
    m = BoxE(dim=8, device="cpu", rules=RULES + [{"type": "hierarchy", "premise": "b", "conclusion": "x2"}])
    m.add_facts([("a", ["p", "q"])])
    rel = m._relation_index
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        m.box_centre = torch.randn(m.box_centre.shape, generator=g)
        m.box_shape = torch.randn(m.box_shape.shape, generator=g)
        m.box_scale = torch.randn(m.box_scale.shape, generator=g)
        m.separators = torch.randn(m.separators.shape, generator=g)
        low, high = m.boxes()

        def box(r, p, low=low, high=high):
            return low[rel[r], p], high[rel[r], p]

        def inside(small, big):
            return bool((big[0] <= small[0]).all() and (small[1] <= big[1]).all())

        for p in (0, 1):
            assert inside(box("a", p), box("b", p))
            assert inside(box("b", p), box("x2", p))  # and so a inside x2, transitively
            meet = (
                torch.maximum(box("c1", p)[0], box("c2", p)[0]),
                torch.minimum(box("c1", p)[1], box("c2", p)[1]),
            )
            if (meet[0] <= meet[1]).all():
                assert inside(meet, box("c3", p))
            assert torch.equal(box("i1", p)[0], box("i2", 1 - p)[0])
        assert torch.equal(box("s", 0)[0], box("s", 1)[0]) and torch.equal(box("s", 0)[1], box("s", 1)[1])
        p, k = m._plan.exclusion_sites[0]
        x1, x2 = box("x1", p), box("x2", p)
        assert x1[1][k] <= x2[0][k] or x2[1][k] <= x1[0][k]  # disjoint on one coordinate


def test_cyclic_hierarchy_makes_equal_boxes():
    m = BoxE(
        dim=4,
        device="cpu",
        rules=[
            {"type": "hierarchy", "premise": "p", "conclusion": "q"},
            {"type": "hierarchy", "premise": "q", "conclusion": "p"},
        ],
    )
    low, high = m.boxes()
    assert torch.equal(low[0], low[1]) and torch.equal(high[0], high[1])


@pytest.mark.parametrize(
    "rules, culprit",
    [
        ([{"type": "exclusion", "relations": ["r", "r"]}], "r"),
        (
            [
                {"type": "hierarchy", "premise": "a", "conclusion": "b"},
                {"type": "hierarchy", "premise": "a", "conclusion": "c"},
                {"type": "exclusion", "relations": ["b", "c"]},
            ],
            "a",
        ),
        (
            [
                {"type": "hierarchy", "premise": "a", "conclusion": "b"},
                {"type": "exclusion", "relations": ["a", "b"]},
            ],
            "a",
        ),
        (
            [
                {"type": "symmetry", "relation": "r"},
                {"type": "inversion", "relation": "r", "inverse": "s"},
                {"type": "exclusion", "relations": ["r", "s"]},
            ],
            "r",
        ),
    ],
)
def test_contradictory_rules_are_refused_and_change_nothing(rules, culprit):
    m = BoxE(dim=4, device="cpu", rules=[{"type": "symmetry", "relation": "friend"}])
    m.add_facts([("friend", ["x", "y"])])
    before = (m.rules, m.relations, m.box_centre.clone())
    with pytest.raises(RuleConflictError, match=f"{culprit} would imply both"):
        m.add_rules(rules)
    assert (m.rules, m.relations) == before[:2] and torch.equal(m.box_centre, before[2])
    with pytest.raises(RuleConflictError):
        BoxE(dim=4, device="cpu", rules=rules)


def test_inverse_exclusion_is_not_a_contradiction():
    """r(x, y) excludes s(x, y) while r(x, y) <=> s(y, x): r is antisymmetric, not empty."""
    m = BoxE(
        dim=4,
        device="cpu",
        rules=[
            {"type": "inversion", "relation": "r", "inverse": "s"},
            {"type": "exclusion", "relations": ["r", "s"]},
        ],
    )
    assert len(m.rules) == 2


def test_malformed_rules_are_refused():
    m = BoxE(dim=4, device="cpu")
    m.add_facts([("t", ["a", "b", "c"]), ("r", ["a", "b"])])
    with pytest.raises(RuleError, match="unknown rule type"):
        m.add_rules([{"type": "composition", "relations": ["r", "r"]}])
    with pytest.raises(RuleError, match="missing \\['conclusion'\\]"):
        m.add_rules([{"type": "hierarchy", "premise": "r"}])
    with pytest.raises(RuleError, match="at least two"):
        m.add_rules([{"type": "intersection", "premises": ["r"], "conclusion": "q"}])
    with pytest.raises(ArityError, match="binary"):
        m.add_rules([{"type": "symmetry", "relation": "t"}])
    with pytest.raises(ArityError, match="different arities"):
        m.add_rules([{"type": "hierarchy", "premise": "t", "conclusion": "r"}])
    with pytest.raises(RuleError):
        m.add_rules(["r => q"])
    assert m.rules == []
    # a rule may create its relations; a fact with another arity is then refused
    m.add_rules([{"type": "inversion", "relation": "parent", "inverse": "child"}])
    assert m.relations["child"] == 2
    with pytest.raises(ArityError):
        m.add_facts([("child", ["a", "b", "c"])])
    with pytest.raises(UnknownRelationError):
        m.complete("sibling", ["a", None])
