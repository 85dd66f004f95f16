"""A shard's file identity (app/cluster/storage.py: ``open_shard_file``, ``ShardFiles``), without Ray.

A shard that is not new never makes an empty file in place of a missing one, and never
serves another shard's file; a shard made before tokens existed adopts its file; the
gateway's record goes from "may create" to "must exist" once the shard reports its file.
"""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from app.cluster.storage import ShardFileFault, ShardFiles, ShardStorage, open_shard_file
from app.storage import NewPattern


def _shard_with_patterns(folder, token: str | None, may_create: bool = True) -> str:
    storage, found = open_shard_file(folder, token, may_create)
    record = storage.open_memory("m", "hopfield", (4,), False, {})
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    storage.add_patterns_at(record.id, [NewPattern(f"p{i}", v) for i, v in enumerate(vectors)], [1, 2, 3])
    storage.close()
    return found


def test_a_new_shard_makes_its_file_and_a_restarted_one_needs_it(tmp_path):
    folder = tmp_path / "m1" / "shard-0"
    assert _shard_with_patterns(folder, "a" * 32) == "a" * 32
    storage, found = open_shard_file(folder, "a" * 32, may_create=False)  # the same file: served
    assert found == "a" * 32 and storage.count_patterns(storage.list_memories()[0].id) == 3
    storage.close()

    shutil.rmtree(tmp_path / "m1")  # the node's disk wiped
    with pytest.raises(ShardFileFault) as missing:
        open_shard_file(folder, "a" * 32, may_create=False)
    assert missing.value.reason == "shard_file_missing"
    assert missing.value.file == str(folder / "ams.sqlite3") and str(folder / "ams.sqlite3") in str(
        missing.value
    )
    assert not (tmp_path / "m1").exists()  # nothing made in its place


def test_another_shards_file_is_refused_and_left_as_it_is(tmp_path):
    _shard_with_patterns(tmp_path / "s0", "a" * 32)
    _shard_with_patterns(tmp_path / "s1", "b" * 32)
    shutil.copy(tmp_path / "s1" / "ams.sqlite3", tmp_path / "s0" / "ams.sqlite3")
    before = (tmp_path / "s0" / "ams.sqlite3").read_bytes()
    for may_create in (False, True):  # not even a shard that may make its file takes it
        with pytest.raises(ShardFileFault) as foreign:
            open_shard_file(tmp_path / "s0", "a" * 32, may_create)
        assert foreign.value.reason == "shard_file_foreign" and "another shard's file" in str(foreign.value)
    assert (tmp_path / "s0" / "ams.sqlite3").read_bytes() == before

    plain = ShardStorage(tmp_path / "plain")  # a file without a token (another version's, say)
    plain.close()
    with pytest.raises(ShardFileFault, match="no identity token"):
        open_shard_file(tmp_path / "plain", "a" * 32, may_create=False)


def test_a_shard_made_before_tokens_adopts_its_file_but_never_makes_one(tmp_path):
    old = ShardStorage(tmp_path / "old")  # as shards were made before this change
    record = old.open_memory("m", "hopfield", (4,), False, {})
    old.add_patterns_at(record.id, [NewPattern("p0", np.ones(4, np.float32))], [1])
    old.close()
    storage, adopted = open_shard_file(tmp_path / "old", None, may_create=False)
    assert len(adopted) == 32 and storage.count_patterns(record.id) == 1
    storage.close()
    assert open_shard_file(tmp_path / "old", None, False)[1] == adopted  # kept in the file
    with pytest.raises(ShardFileFault, match="is missing"):
        open_shard_file(tmp_path / "gone", None, may_create=False)
    assert not (tmp_path / "gone").exists()


def test_the_gateway_record_allows_creation_until_the_shard_reports_its_file(tmp_path):
    files = ShardFiles(tmp_path / "cluster.sqlite3")
    made = files.expected(7, 2, new=True)
    assert [may for _, may in made] == [True, True] and made[0][0] != made[1][0]
    assert files.expected(7, 2, new=False) == made  # not reported yet (a crash mid-create): may make it
    files.confirm(7, 0, made[0][0])
    files.confirm(7, 1, "someone else's")  # a different token never replaces the recorded one
    assert files.expected(7, 2, new=False) == [(made[0][0], False), (made[1][0], True)]
    files.confirm(8, 0, "c" * 32)  # a shard made before tokens: its adopted file's token
    assert files.expected(8, 2, new=False) == [("c" * 32, False), (None, False)]
    files.close()
    again = ShardFiles(tmp_path / "cluster.sqlite3")  # durable across a gateway restart
    assert again.expected(7, 2, new=False)[0] == (made[0][0], False)
    again.forget(7)
    assert again.expected(7, 2, new=False) == [(None, False), (None, False)]
    again.close()


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_refused_file_is_never_written_however_often_it_is_checked(tmp_path):
    unrelated = tmp_path / "unrelated"  # someone's own SQLite file placed at the shard's path
    unrelated.mkdir()
    conn = sqlite3.connect(unrelated / "ams.sqlite3")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    garbage = tmp_path / "garbage"  # not SQLite at all
    garbage.mkdir()
    (garbage / "ams.sqlite3").write_bytes(b"not a database" * 100)
    _shard_with_patterns(tmp_path / "other", "b" * 32)  # another shard's file
    for folder, expected, why in (
        (unrelated, "a" * 32, "not a shard file"),
        (unrelated, None, "not a shard file"),  # not even adopted by a shard made before tokens
        (garbage, "a" * 32, "not a shard file"),
        (tmp_path / "other", "a" * 32, "another shard's file"),
    ):
        before = _snapshot(folder)
        for _ in range(3):  # the shard's re-check every 2 s (MemoryShard.info) calls the same
            with pytest.raises(ShardFileFault, match=why) as refused:
                open_shard_file(folder, expected, may_create=False)
            assert refused.value.reason == "shard_file_foreign"
        assert _snapshot(folder) == before, folder  # byte for byte, and no file added
    conn = sqlite3.connect(unrelated / "ams.sqlite3")
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


def test_the_token_is_read_from_a_file_copied_with_its_wal(tmp_path):
    storage, token = open_shard_file(tmp_path / "s0", None, may_create=True)  # open: the WAL holds it
    shutil.copy(storage.path, tmp_path / "copy.sqlite3")
    (tmp_path / "s1").mkdir()
    shutil.copy(tmp_path / "copy.sqlite3", tmp_path / "s1" / "ams.sqlite3")
    shutil.copy(f"{storage.path}-wal", tmp_path / "s1" / "ams.sqlite3-wal")  # no -shm: a plain copy
    storage.close()
    with pytest.raises(ShardFileFault, match="another shard's file"):
        open_shard_file(tmp_path / "s1", "a" * 32, may_create=False)
    reopened, found = open_shard_file(tmp_path / "s1", token, may_create=False)
    assert found == token
    reopened.close()
