"""Attacks on a real server whose address space is capped (RLIMIT_AS 3 GiB, ~2 GiB above what it
maps idle), one per finding of issue 22 (attacks.py says what each sends). During every
attack the server stays up and answers /livez (probed every 20 ms from a process of its own:
no probe fails, 98% within 100 ms, none over a second: the machine is shared, so a lone
scheduling hiccup is allowed for), and a writer stores small batches the whole time: at the
end, after a SIGKILL and a restart too, every batch it was answered 201 for is there. Each
path is served once before the attacks (``warm_up``): a first use loads code, once.

The server is ``python -m app`` (header timeouts and the connection cap live there) with
both API keys, AMS_BODY_TIMEOUT = AMS_HEADER_TIMEOUT = 2 s and AMS_RATE_LIMIT = 200/s.
"""

from __future__ import annotations

import attacks as A
import attacks_state as S
import pytest
from ams_client import Client
from ams_client.errors import RateLimited
from live_server import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    server = LiveServer(
        tmp_path_factory.mktemp("attacks") / "data", main=True, limit_as=A.LIMIT_AS, **A.SERVER_ENV
    )
    t = A.Target(server)
    S.warm_up(t)  # each path served once: first uses load code, once per process
    t.ledger = S.Ledger(t)
    yield t
    t.ledger.stop()
    server.stop()


# --- 1: bodies before the key --------------------------------------------------------------------
def test_bodies_without_a_key_are_refused_on_their_headers(target):
    r = A.run(target, lambda t: A.unauthenticated_stalled_bodies(t, connections=60, mib=30))
    A.survived(r)
    assert r["statuses"] == [401] * 60
    assert r["rss_peak_growth_mib"] < 50, r  # no body is held: 1.8 GB were sent at it
    r = A.run(target, A.unauthenticated_big_json)
    A.survived(r)
    assert r["statuses"] == [401] * 4


def test_large_json_to_a_small_endpoint_is_refused_and_slow_bodies_time_out(target):
    r = A.run(target, A.write_key_big_json)
    A.survived(r)
    assert r["statuses"] == [413] * 4
    r = A.run(target, A.slow_body)
    A.survived(r)
    assert r["status"] == 408 and r["seconds"] < 5


# --- 2: a cue's values against D -----------------------------------------------------------------
def test_a_huge_cue_is_refused_before_it_is_parsed(target):
    r = A.run(target, A.huge_cue)
    A.survived(r)
    assert r["statuses"]["vec"] == [413] * 4  # a vector memory's cues have a size: refused unread
    assert r["statuses"]["img"] == [422] * 4  # counted against D before it is parsed


# --- 3: pictures ---------------------------------------------------------------------------------
def test_image_bombs_and_undocumented_formats_are_refused(target):
    r = A.run(target, A.image_bombs)
    A.survived(r)
    assert r["statuses"] == [422] * 8
    assert set(r["formats"].values()) == {422}, r["formats"]


def test_exif_orientation_is_applied(target):
    r = A.run(target, A.exif_orientation)
    A.survived(r)
    assert r["status"] == 201 and r["upright"], r


# --- 4: the memory budget ------------------------------------------------------------------------
def test_models_and_batches_over_the_budget_are_refused(target):
    r = A.run(target, S.huge_model)
    A.survived(r)
    assert (r["create"]["status"], r["create"]["code"]) == (422, "memory_budget_exceeded"), r
    r = A.run(target, S.upscaled_batch)
    A.survived(r)
    assert (r["status"], r["code"]) == (422, "memory_budget_exceeded"), r


# --- 5: jobs -------------------------------------------------------------------------------------
def test_jobs_stop_when_cancelled_or_deleted_and_share_the_slot(target):
    r = A.run(target, S.endless_training)
    A.survived(r)
    assert r["create_1e9"] == 422
    assert r["cancel_s"] is not None and r["cancel_s"] < 2, r
    assert r["delete_s"] < 2 and r["train_again"] == 202, r
    r = A.run(target, S.starved_jobs)
    A.survived(r)
    assert r["small_job_s"] is not None and r["small_job_s"] < 15, r


# --- 6: what was a 500 ---------------------------------------------------------------------------
def test_what_was_a_500_is_a_4xx(target):
    r = A.run(target, S.five_hundreds)
    A.survived(r)
    seen = r["seen"]
    assert seen.pop("delete racing train: 5xx") == 0, r["race"]
    assert set(seen.values()) == {422}, seen
    assert r["race"].get("gone 404") == r["race"].get("delete 204") == 30, r["race"]  # each delete deleted
    assert "deleted, yet still there" not in r["race"]


# --- 8: the smaller ones -------------------------------------------------------------------------
def test_slow_and_idle_connections_are_closed(target):
    r = A.run(target, A.header_trickle)
    A.survived(r)
    assert r["status"] == 408 and r["idle_closed"] == 50, r


def test_no_key_is_told_nothing_of_its_body(target):
    assert A.run(target, A.malformed_json_without_key)["status"] == 401
    assert set(A.run(target, A.docs_open)["statuses"].values()) == {200}  # open, and documented so


# --- rate limits ---------------------------------------------------------------------------------
def test_a_flood_gets_429_with_retry_after_and_the_client_waits_it_out(target):
    r = A.run(target, A.request_flood)
    A.survived(r)
    assert r["statuses"].get(429, 0) > 0 and r["retry_after"] == ["1"], r
    with Client(target.url, api_key=A.READ_KEY, max_retries=0) as eager:
        with pytest.raises(RateLimited) as refused:
            for _ in range(1000):
                eager.list_memories()
    assert refused.value.retry_after == 1
    with Client(target.url, api_key=A.READ_KEY) as patient:  # honours Retry-After, then succeeds
        assert all(patient.list_memories() for _ in range(600))


# --- last: nothing acknowledged lost ---------------------------------------------------------------
def test_nothing_acknowledged_was_lost(target):
    ledger = target.ledger
    ledger.stop()
    assert len(ledger.acked) > 100 and not ledger.errors, ledger.errors  # none refused, none lost
    assert ledger.missing() == []
    target.server.restart(kill=True)
    assert ledger.missing() == []
