"""The BoxE memory: higher arity, completion, training loop, persistence, bad input."""

from __future__ import annotations

import random

import pytest
import torch

from memory_core.boxe import ArityError, BoxE, UnknownEntityError, UnknownRelationError
from memory_core.checks import EmptyMemoryError

pytestmark = pytest.mark.usefixtures("one_thread")


def higher_arity_facts() -> list:
    """Random facts of arity 2, 3 and 4 over 40 entities, in one knowledge base."""
    rng = random.Random(1)
    ents = [f"e{i}" for i in range(40)]
    facts = []
    for relation, arity, n in (("knows", 2, 60), ("flight", 3, 60), ("sale", 4, 60)):
        seen: set[tuple[str, ...]] = set()
        while len(seen) < n:
            seen.add(tuple(rng.sample(ents, arity)))
        facts += [(relation, list(args)) for args in sorted(seen)]
    return facts


@pytest.fixture(scope="module")
def higher_arity():
    facts = higher_arity_facts()
    m = BoxE(dim=32, seed=0, device="cpu", batch_size=64, lr=0.02)
    m.add_facts(facts)
    m.fit(80, progress=False)
    return m, facts


@pytest.mark.parametrize("relation", ["flight", "sale"])
def test_higher_arity_facts_are_learned(higher_arity, relation):
    """Every argument of every arity-3 and arity-4 fact recovered at Hits@1 >= 0.9
    (filtered link prediction over the stored facts, all positions)."""
    m, facts = higher_arity
    chosen = [f for f in facts if f[0] == relation]
    metrics = m.evaluate(chosen)
    assert metrics["count"] == len(chosen) * len(chosen[0][1])
    assert metrics["hits@1"] >= 0.9, metrics


def test_completion_ranks_filters_and_cuts(higher_arity):
    m, facts = higher_arity
    _, args = next(f for f in facts if f[0] == "flight")
    query = [args[0], None, args[2]]
    full = m.complete("flight", query)
    assert len(full) == len(m.entities)
    assert [s for _, s in full] == sorted((s for _, s in full), reverse=True)
    assert full[0][0] == args[1]
    top = m.complete("flight", query, k=3)
    assert top == full[:3]
    filtered = [e for e, _ in m.complete("flight", query, filter_known=True)]
    known = {a[1] for r, a in facts if r == "flight" and a[0] == args[0] and a[2] == args[2]}
    assert args[1] not in filtered and not known & set(filtered)
    assert len(filtered) == len(m.entities) - len(known)


def test_save_load_round_trip_is_identical(tmp_path, higher_arity):
    m, facts = higher_arity
    m.add_rules([{"type": "exclusion", "relations": ["knows", "rival"]}])
    m.add_facts([("rival", ["e1", "e2"])])
    m.fit(2, progress=False)  # Adam's moments for the grown shapes
    path = tmp_path / "kb.safetensors"
    m.save(path)
    loaded = BoxE.load(path, device="cpu")
    assert (loaded.entities, loaded.relations, loaded.rules) == (m.entities, m.relations, m.rules)
    assert loaded.facts.rows() == m.facts.rows() and loaded.config == m.config
    probe = facts[::7] + [("rival", ["e1", "e2"])]
    assert torch.equal(loaded.score(probe), m.score(probe))
    assert loaded.complete("sale", [None, *facts[-1][1][1:]]) == m.complete("sale", [None, *facts[-1][1][1:]])
    # training on resumes exactly as the saved memory would have
    m.fit(2, progress=False)
    loaded.fit(2, progress=False)
    for a, b in zip(m.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    assert loaded.epochs_done == m.epochs_done


def test_training_is_deterministic_with_a_seed():
    facts = higher_arity_facts()[:80]

    def trained(seed):
        m = BoxE(dim=16, seed=seed, device="cpu", batch_size=32)
        m.add_facts(facts)
        m.fit(3, progress=False)
        return m.parameters()

    a, b, c = trained(3), trained(3), trained(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_fit_reports_progress_stops_and_cancels():
    m = BoxE(dim=8, device="cpu", batch_size=16)
    m.add_facts(higher_arity_facts()[:64])  # 4 batches an epoch
    seen = []
    history = m.fit(5, progress=False, callback=lambda info: seen.append(info))
    assert [i["epoch"] for i in seen] == [1, 2, 3, 4, 5] and history.stopped == "epochs"
    assert set(seen[0]) == {"epoch", "epochs", "loss", "seconds", "eta_s"}
    assert seen[-1]["eta_s"] == 0 and seen[0]["eta_s"] > 0 and len(history.losses) == 5
    history = m.fit(5, progress=False, callback=lambda info: info["epoch"] < 2)
    assert history.stopped == "callback" and len(history) == 2
    polls = []
    before = m.epochs_done
    history = m.fit(5, progress=False, should_stop=lambda: polls.append(1) or len(polls) > 6)
    assert history.stopped == "cancelled" and m.epochs_done == before + 1  # cancelled inside epoch 2
    with pytest.raises(TypeError):
        m.fit(1, progress=False, callback="not callable")


def test_incremental_growth_keeps_what_was_learned():
    m = BoxE(dim=8, device="cpu")
    m.add_facts([("likes", ["ann", "bob"]), ("likes", ["bob", "cy"])])
    m.fit(3, progress=False)
    base, centre = m.entity_base.clone(), m.box_centre.clone()
    assert (
        m.add_facts([("likes", ["ann", "bob"]), ("likes", ["cy", "dee"]), ("trio", ["ann", "bob", "cy"])])
        == 2
    )
    assert m.entities == ["ann", "bob", "cy", "dee"] and m.relations == {"likes": 2, "trio": 3}
    assert torch.equal(m.entity_base[:3], base) and torch.equal(m.box_centre[:1, :2], centre)
    assert m.trained_facts == 2 and len(m) == 4
    m.fit(2, progress=False)
    assert m.trained_facts == 4 and m.complete("trio", ["ann", "bob", None])
    # a copy trains apart (the service's background jobs) and leaves the original as it was
    twin, before = m.copy(), m.entity_base.clone()
    twin.add_facts([("likes", ["dee", "eve"])])
    twin.fit(2, progress=False)
    assert torch.equal(m.entity_base, before) and len(m) == 4 and "eve" not in m.entities
    assert not torch.equal(twin.entity_base[:4], before)


def test_bad_input_is_refused_and_stores_nothing():
    m = BoxE(dim=8, device="cpu")
    with pytest.raises(EmptyMemoryError):
        m.fit(1, progress=False)
    m.add_facts([{"relation": "r", "args": ["a", "b"]}])
    for bad in (
        [("r", ["a", "b", "c"])],
        [("r", "ab")],
        [("r", [])],
        [("", ["a", "b"])],
        [("r", ["a", 3])],
        [{"relation": "r", "args": ["a", "b"], "extra": 1}],
        ["r(a, b)"],
        [("q", ["a", "b"]), ("q", ["a", "b", "c"])],
    ):
        with pytest.raises((ValueError, ArityError)):
            m.add_facts(bad)
    assert len(m) == 1 and m.entities == ["a", "b"] and m.relations == {"r": 2}
    with pytest.raises(ArityError):  # the check alone, as a service validates before it persists
        m.check_facts([("s", ["a", "b"]), ("r", ["a"])])
    assert m.check_facts([("s", ["a", "c"])]) == [("s", ("a", "c"))] and "s" not in m.relations
    with pytest.raises(UnknownRelationError, match="'nope'"):
        m.complete("nope", ["a", None])
    with pytest.raises(UnknownEntityError, match="'zed'"):
        m.complete("r", ["zed", None])
    with pytest.raises(ArityError):
        m.complete("r", ["a", "b", None])
    for args in (["a", "b"], [None, None]):
        with pytest.raises(ValueError, match="exactly one argument"):
            m.complete("r", args)
    with pytest.raises(ValueError, match="k must be"):
        m.complete("r", ["a", None], k=0)
    with pytest.raises(ValueError, match="unknown BoxE settings"):
        BoxE(device="cpu", dimension=3)
    for bad in ({"norm": 3}, {"negatives": -1}, {"lr": 0.0}, {"margin": float("nan")}, {"dim": 0}):
        with pytest.raises(ValueError):
            BoxE(device="cpu", **bad)


def test_load_refuses_what_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ValueError, match="not a BoxE checkpoint"):
        BoxE.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "ams-pc/1"})
    with pytest.raises(ValueError, match="not a BoxE checkpoint"):
        BoxE.load(other)
    # another model's real checkpoint is named as such, not called a damaged file
    from memory_core import PCMemory

    pc = PCMemory(sizes=[2, 4], epochs=1, device="cpu")
    pc.fit(torch.rand(3, 4), progress=False)
    pc.save(tmp_path / "pc.safetensors")
    with pytest.raises(ValueError, match=r"not a BoxE checkpoint \(format 'ams-pc/1'\)"):
        BoxE.load(tmp_path / "pc.safetensors")


def test_remove_facts_forgets_them_everywhere():
    """A removed fact is no longer stored, filtered, trained on or refuted by the rules; the
    vocabulary and the embeddings stay; removing what is not stored is a no-op."""
    m = BoxE(dim=8, seed=0, device="cpu", rules=[{"type": "exclusion", "relations": ["likes", "hates"]}])
    m.add_facts([("likes", ["a", "b"]), ("likes", ["a", "c"]), ("knows", ["b", "c"])])
    assert {e for e, _ in m.complete("hates", ["a", None])[-2:]} == {"b", "c"}  # refuted: ranked last
    before = m.entity_base.clone()
    assert m.remove_facts([("likes", ["a", "b"]), ("likes", ["a", "zed"]), ("nope", ["a", "b"])]) == 1
    assert len(m) == 2 and ("likes", ("a", "b")) not in m.stored_facts()
    assert m.stored_facts() == [("likes", ("a", "c")), ("knows", ("b", "c"))]
    assert m.entities == ["a", "b", "c"] and torch.equal(m.entity_base, before)
    assert "b" in {e for e, _ in m.complete("likes", ["a", None], filter_known=True)}
    assert m.excluded_rows().tolist() == [[m.relation_id("hates"), 0, 2]]  # only likes(a, c) is left
    assert m.complete("hates", ["a", None])[-1][0] == "c"
    assert m.remove_facts([("likes", ["a", "b"])]) == 0
    m.add_facts([("likes", ["a", "b"])])  # stored again after a removal: same count, new content
    assert m.remove_facts([("likes", ["a", "c"])]) == 1
    assert m.excluded_rows().tolist() == [[m.relation_id("hates"), 0, 1]]
    assert m.complete("hates", ["a", None])[-1][0] == "b"  # as many facts as before, other refutations
