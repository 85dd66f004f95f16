"""Relational memories through ``ams_client`` against a real service process (both clients,
fixtures in conftest.py): facts stored in batches under the service's limits, paged,
fetched and deleted; the vocabulary; queries of a trained knowledge base (the bundled
European one), and every error of the facts endpoints as its typed error."""

from __future__ import annotations

import itertools
import re

import pytest
from ams_client import (
    Candidate,
    Client,
    Conflict,
    Fact,
    FactsStored,
    NotFound,
    QueryResult,
    TooLarge,
    ValidationError,
)
from conftest import API_KEY

from memory_core.boxe.datasets import europe_kb

pytestmark = pytest.mark.timeout(300)

EUROPE = [(relation, *args) for relation, args in europe_kb().facts]  # 176 facts, real data
# borders(germany, x) as stored (the rest of Germany's neighbours are stored the other way round)
STORED_GERMANY_BORDERS = {args[1] for r, *args in EUROPE if r == "borders" and args[0] == "germany"}
UNTRAINED = {"dim": 8, "negatives": 4, "epochs": 5}  # these tests never train it


def fact_requests(ams_server) -> int:
    """Fact stores the service has answered 201, from its own /metrics."""
    text = ams_server.client().get("/metrics").text
    found = re.search(
        r'ams_requests_total\{method="POST",route="/v1/memories/\{name\}/facts",status="201"\} (\S+)', text
    )
    return int(float(found.group(1))) if found else 0


def test_store_page_get_delete_facts(ams, ams_server, fresh) -> None:
    name = fresh("kb")
    made = ams.create_memory(name, kind="relational", config=UNTRAINED)
    assert made.is_relational and (made.shape, made.dim, made.count, made.state) == ((), 0, 0, "untrained")
    assert made.config["dim"] == 8 and made.config["rules"] == []

    before = fact_requests(ams_server)
    stored = ams.store_facts(name, EUROPE, progress=False)  # 176 facts, 40 a request at most
    assert isinstance(stored, FactsStored) and len(stored.ids) == 176 and stored.new == stored.count == 176
    assert fact_requests(ams_server) - before == 5
    listed = list(ams.facts(name, page_size=50))  # four pages
    assert [(f.relation, *f.args) for f in listed] == EUROPE and [f.id for f in listed] == stored.ids

    again = ams.store_facts(  # every form a fact takes; stored facts keep their ids
        name,
        [
            listed[0],
            {"relation": "borders", "args": ["spain", "andorra"]},
            ("capital_of", "andorra la vella", "andorra"),
        ],
    )
    assert again.ids[0] == stored.ids[0] and again.new == 2 and again.count == 178
    assert ams.store_facts(name, {"id": 7, "relation": "borders", "args": ["spain", "andorra"]}).new == 0
    one = ams.get_fact(name, again.ids[2])
    assert one == Fact(id=again.ids[2], relation="capital_of", args=("andorra la vella", "andorra"))
    assert str(one) == "capital_of(andorra la vella, andorra)"

    vocabulary = ams.vocabulary(name, page_size=10)  # entities over several pages
    entities = list(dict.fromkeys([e for _, *args in EUROPE for e in args] + ["andorra", "andorra la vella"]))
    assert vocabulary.entities == entities and vocabulary.entity_count == len(entities)
    assert vocabulary.arity["borders"] == 2 and set(vocabulary.arity) == {r for r, *_ in EUROPE}

    assert ams.delete_fact(name, one.id) is None
    with pytest.raises(NotFound) as err:
        ams.get_fact(name, one.id)
    assert err.value.code == "fact_not_found"
    with pytest.raises(NotFound) as err:
        ams.delete_fact(name, one.id)
    assert err.value.code == "fact_not_found"
    assert ams.get_memory(name).count == 177 and "andorra la vella" in ams.vocabulary(name).entities
    copy = fresh("copy")
    ams.create_memory(copy, kind="relational", config=UNTRAINED)
    copied = ams.store_facts(copy, ams.facts(name))  # Facts go back in as they came out
    assert copied.new == 177 and [(f.relation, f.args) for f in ams.facts(copy)] == [
        (f.relation, f.args) for f in ams.facts(name)
    ]

    with pytest.raises(ValidationError) as err:  # borders has two arguments
        ams.store_facts(name, [("borders", "spain", "france", "andorra")])
    assert err.value.code == "arity_mismatch" and err.value.stored is None
    with pytest.raises(Conflict) as err:
        ams.query(name, "borders", ["spain", None])
    assert err.value.code == "not_trained"
    for bad, error in (
        ([("borders",)], ValueError),  # no arguments
        (["borders spain france"], TypeError),  # text is not a fact
        ([("borders", "spain", 3)], TypeError),
        ([{"relation": "borders", "arguments": ["a", "b"]}], ValueError),
        ([], ValueError),
    ):
        with pytest.raises(error):
            ams.store_facts(name, bad)  # refused before anything is sent
    assert ams.get_memory(name).count == 177


def test_facts_and_patterns_do_not_mix(ams, fresh) -> None:
    vectors, kb = fresh("vec"), fresh("kb")
    ams.create_memory(vectors, 3)
    ams.create_memory(kb, kind="relational", config=UNTRAINED)
    for call in (
        lambda: ams.store_facts(vectors, [("r", "a", "b")]),
        lambda: ams.query(vectors, "r", ["a", None]),
        lambda: ams.vocabulary(vectors),
        lambda: ams.store(kb, [[1.0, 0.0, 0.0]]),
        lambda: ams.retrieve(kb, [1.0, 0.0, 0.0]),
    ):
        with pytest.raises(ValidationError) as err:
            call()
        assert err.value.code == "wrong_kind"
    with pytest.raises(ValidationError) as err:
        ams.create_memory(fresh("kb"), 3, kind="relational")
    assert err.value.code == "invalid_shape"
    with pytest.raises(ValidationError) as err:
        ams.create_memory(fresh("vec"))  # a pattern memory needs its shape
    assert err.value.code == "invalid_shape"


def test_query_a_trained_knowledge_base(ams, europe) -> None:
    capital = ams.query(europe, "capital_of", [None, "france"], k=3)
    assert isinstance(capital, QueryResult) and isinstance(capital.candidates[0], Candidate)
    assert capital.entities[0] == "paris" and capital.candidates[0].known and len(capital.candidates) == 3
    assert capital.state == "ready" and capital.trained_count == 176

    count = ams.vocabulary(europe).entity_count
    every = ams.query(europe, "borders", ["germany", None], k=1000)  # more than there are: all
    assert len(every.candidates) == count
    assert {c.entity for c in every.candidates if c.known} == STORED_GERMANY_BORDERS
    assert all(a.score >= b.score for a, b in itertools.pairwise(every.candidates))
    new = ams.query(europe, "borders", ["germany", None], k=1000, filter_known=True)
    assert len(new.candidates) == count - len(STORED_GERMANY_BORDERS) and not any(
        c.known for c in new.candidates
    )
    assert set(new.entities) == {c.entity for c in every.candidates if not c.known}

    for relation, args, code in (
        ("neighbours", ["germany", None], "unknown_relation"),
        ("borders", ["atlantis", None], "unknown_entity"),
        ("borders", [None, None], "invalid_query"),
        ("borders", ["germany", "france"], "invalid_query"),
        ("borders", ["germany", "france", None], "arity_mismatch"),
    ):
        with pytest.raises(ValidationError) as err:
            ams.query(europe, relation, args)
        assert err.value.code == code and err.value.status == 422, (relation, args)
        assert code != "unknown_entity" or "'atlantis'" in err.value.message
    with pytest.raises(TypeError):
        ams.query(europe, "borders", "germany")


def test_store_facts_recovers_from_a_413_and_reports_what_was_stored(ams_server, fresh) -> None:
    """Facts of 16 long names: 40 of them are twice the service's 64 KiB, which the client is
    told it may send; it halves the bodies the service refuses (413)."""
    name = fresh("wide")
    wide = [("row", *(f"{i:03d}-{j:02d}-" + "x" * 190 for j in range(16))) for i in range(60)]
    with Client(ams_server.url, api_key=API_KEY, upload_bytes=1 << 20) as client:
        client.create_memory(name, kind="relational", config=UNTRAINED)
        before = fact_requests(ams_server)
        result = client.store_facts(name, wide, progress=False)
        assert fact_requests(ams_server) - before >= 4  # 200 KB in bodies under 64 KiB, not 40 + 20 facts
        assert result.new == result.count == 60 and len(set(result.ids)) == 60
        assert [f.args for f in client.facts(name)] == [f[1:] for f in wide]
        with pytest.raises(TooLarge) as err:  # one fact over the limit alone: the service's answer
            client.store_facts(name, [("big", "z" * 70_000)])
        assert err.value.code == "request_too_large" and err.value.stored is None
        bad = [("pair", f"a{i}", f"b{i}") for i in range(50)] + [("pair", "a", "b", "c")]
        with pytest.raises(ValidationError) as err:  # in the second request (40 facts a request)
            client.store_facts(name, bad, progress=False)
        assert err.value.code == "arity_mismatch"
        assert err.value.stored == FactsStored(ids=err.value.stored.ids, new=40, count=100)
        assert len(err.value.stored.ids) == 40 and client.get_memory(name).count == 100
