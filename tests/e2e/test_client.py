"""Every method of ``ams_client.Client`` and ``AsyncClient`` against a real service process
(``ams`` runs each test with both clients; fixtures in conftest.py)."""

from __future__ import annotations

import io
import itertools
import math
import re

import numpy as np
import pytest
import torch
from ams_client import (
    AsyncJob,
    Client,
    Conflict,
    Job,
    JobFailed,
    Memory,
    NotFound,
    StoreResult,
    ValidationError,
)
from PIL import Image

pytestmark = pytest.mark.timeout(300)


def png_bytes(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.rint(a[0] * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def limit(ams_server, name: str) -> int:
    """A limit the test's service was started with (conftest.py)."""
    return int(ams_server.env[name])


def store_requests(ams_server) -> int:
    """Store requests the service has answered 201, from its own /metrics."""
    text = ams_server.client().get("/metrics").text
    found = re.search(
        r'ams_requests_total\{method="POST",route="/v1/memories/\{name\}/patterns",status="201"\} (\S+)', text
    )
    return int(float(found.group(1))) if found else 0


def test_health_info_metrics(ams, ams_server) -> None:
    assert ams.live() is True
    assert ams.ready() is True
    assert ams.wait_ready(timeout=5) is None
    info = ams.info()
    assert info.auth is True and "hopfield" in info.kinds and "pc" in info.kinds
    assert info.limits.max_request_bytes == limit(ams_server, "AMS_MAX_REQUEST_BYTES")
    assert info.limits.max_batch == limit(ams_server, "AMS_MAX_BATCH")
    assert info.default_configs["hopfield"]["beta"] == 100.0
    assert "ams_requests_total" in ams.metrics()


def test_memories_create_get_list_delete(ams, fresh) -> None:
    name = fresh("vec")
    made = ams.create_memory(name, 8, config={"similarity": "cosine"})
    assert isinstance(made, Memory)
    assert (made.name, made.kind, made.shape, made.dim, made.count, made.text) == (
        name,
        "hopfield",
        (8,),
        8,
        0,
        False,
    )
    assert made.config["similarity"] == "cosine" and not made.is_image
    got = ams.get_memory(name)
    assert got == made and got.created_at.tzinfo is not None
    assert name in [m.name for m in ams.list_memories()]
    with pytest.raises(Conflict) as err:
        ams.create_memory(name, 8)
    assert err.value.code == "memory_exists" and err.value.status == 409
    assert ams.delete_memory(name) is None
    with pytest.raises(NotFound) as err:
        ams.get_memory(name)
    assert err.value.code == "memory_not_found"


def test_store_vectors_from_every_input_and_page_through(ams, fresh, tmp_path) -> None:
    name = fresh("vec")
    ams.create_memory(name, (6,), text=False)
    rng = np.random.default_rng(0)
    batch = rng.random((3, 6), dtype=np.float32)
    tensor = torch.rand(2, 6, dtype=torch.float64)
    np.save(tmp_path / "more.npy", rng.random((2, 6), dtype=np.float32))
    first = ams.store(
        name,
        batch,
        ids=["a", "b", "c"],
        texts=["one", None, "three"],
        metadata=[{"n": 1}, None, {"tags": ["x", "y"]}],
    )
    assert first == StoreResult(ids=["a", "b", "c"], count=3)
    assert ams.store(name, tensor, ids=["t0", "t1"]).count == 5
    from_list = ams.store(name, [[0.5, 0.25, 0, 1, 0.125, 0.75], batch[0] * 0.5])  # lists of numbers, arrays
    assert len(from_list.ids) == 2 and from_list.count == 7
    assert ams.store(name, tmp_path / "more.npy").count == 9

    a = ams.get_pattern(name, "a")
    np.testing.assert_array_equal(a.vector, batch[0])  # float32 exactly
    assert a.array.shape == (6,) and a.image is None and a.text == "one" and a.metadata == {"n": 1}
    assert ams.get_pattern(name, "c").metadata == {"tags": ["x", "y"]}
    np.testing.assert_array_equal(ams.get_pattern(name, "t1").vector, tensor[1].float().numpy())
    np.testing.assert_array_equal(
        ams.get_pattern(name, from_list.ids[0]).vector, [0.5, 0.25, 0, 1, 0.125, 0.75]
    )

    listed = list(ams.patterns(name, page_size=2))  # five pages
    assert [p.id for p in listed][:5] == ["a", "b", "c", "t0", "t1"] and len(listed) == 9
    assert (listed[0].text, listed[1].text, listed[2].metadata) == ("one", None, {"tags": ["x", "y"]})
    with pytest.raises(ValueError, match="page_size must be a positive integer"):
        list(ams.patterns(name, page_size=0))  # refused before anything is sent

    assert ams.delete_pattern(name, "b") is None
    with pytest.raises(NotFound) as err:
        ams.get_pattern(name, "b")
    assert err.value.code == "pattern_not_found"
    assert ams.get_memory(name).count == 8
    with pytest.raises(ValueError, match="1 ids for 2 patterns"):
        ams.store(name, batch[:2], ids=["only-one"])  # refused before anything is sent
    with pytest.raises(ValueError, match="NaN"):
        ams.store(name, np.full((1, 6), np.nan))
    assert ams.get_memory(name).count == 8


def test_store_pictures_from_every_input(ams, fresh, pictures, tmp_path) -> None:
    name = fresh("img")
    ams.create_memory(name, (1, 28, 28))
    (tmp_path / "p2.png").write_bytes(png_bytes(pictures[2]))
    np.save(tmp_path / "batch.npy", pictures[5:7])
    pil = Image.open(io.BytesIO(png_bytes(pictures[0])))
    result = ams.store(
        name,
        [
            pil,
            png_bytes(pictures[1]),
            tmp_path / "p2.png",
            str(tmp_path / "p2.png"),
            pictures[3],
            torch.from_numpy(pictures[4]),
        ],
        ids=["pil", "bytes", "path", "str", "array", "tensor"],
    )
    assert result.count == 6
    assert ams.store(name, tmp_path / "batch.npy", ids=["n5", "n6"]).count == 8
    assert ams.store(name, pictures[7:9]).count == 10
    for pid, index in (
        ("pil", 0),
        ("bytes", 1),
        ("path", 2),
        ("str", 2),
        ("array", 3),
        ("tensor", 4),
        ("n6", 6),
    ):
        got = ams.get_pattern(name, pid)
        assert got.image.size == (28, 28) and got.vector is None
        np.testing.assert_array_equal(got.array, pictures[index])  # 8-bit pictures: exact
    with pytest.raises(ValidationError) as err:  # a picture of another size, without fit
        ams.store(name, [Image.new("L", (30, 20))])
    assert err.value.code == "shape_mismatch"
    assert ams.store(name, [Image.new("L", (30, 20))], fit=True).count == 11


def test_store_splits_uploads_over_the_request_limit(ams, ams_server, fresh, fashion_images) -> None:
    max_bytes, max_batch = limit(ams_server, "AMS_MAX_REQUEST_BYTES"), limit(ams_server, "AMS_MAX_BATCH")
    name = fresh("big")
    ams.create_memory(name, 784)
    vectors = fashion_images[:300].reshape(300, -1).numpy()
    ids = [f"v{i}" for i in range(300)]
    payload = sum(len(",".join(f"{v:.9g}" for v in row)) for row in vectors)  # the numbers alone
    assert payload > 10 * max_bytes
    before = store_requests(ams_server)
    result = ams.store(name, vectors, ids=ids, progress=False)
    sent = store_requests(ams_server) - before
    assert result.ids == ids and result.count == 300
    assert sent >= max(math.ceil(payload / max_bytes), math.ceil(300 / max_batch)), sent
    assert sent <= 2 * math.ceil(payload / max_bytes) + 1, sent  # packed, not one per pattern
    assert [p.id for p in ams.patterns(name)] == ids
    for i in (0, 151, 299):
        np.testing.assert_array_equal(ams.get_pattern(name, ids[i]).vector, vectors[i])


def test_store_recovers_from_a_413_and_reports_what_was_stored(ams_server, fresh, fashion_images) -> None:
    vectors = fashion_images[:60].reshape(60, -1).numpy()
    name = fresh("proxy")
    max_bytes = limit(ams_server, "AMS_MAX_REQUEST_BYTES")
    with Client(ams_server.url, api_key=ams_server.env["AMS_API_KEY"], upload_bytes=10 * max_bytes) as client:
        client.create_memory(name, 784)  # the client believes bodies of 640 KiB pass; the service says 413
        result = client.store(name, vectors, progress=False)
        assert result.count == 60 and len(set(result.ids)) == 60
        np.testing.assert_array_equal(client.get_pattern(name, result.ids[59]).vector, vectors[59])
        bad = [f"w{i}" for i in range(50)] + ["w3"]  # the second request repeats an id of the first
        with pytest.raises(Conflict) as err:
            client.store(name, vectors[:51], ids=bad, progress=False)
        assert err.value.code == "pattern_exists"
        assert err.value.stored is not None and err.value.stored.ids == bad[: len(err.value.stored.ids)]
        assert 0 < len(err.value.stored.ids) < 51
        assert client.get_memory(name).count == 60 + len(err.value.stored.ids)


def test_retrieve_search_complete(ams, fresh, pictures) -> None:
    name = fresh("fashion")
    ams.create_memory(name, (1, 28, 28))
    ams.store(name, pictures[:20], ids=[f"f{i}" for i in range(20)])
    rng = np.random.default_rng(1)
    original = pictures[7]
    noisy = np.clip(original + rng.normal(0, 0.2, original.shape), 0, 1).astype(np.float32)

    r = ams.retrieve(name, noisy, k=2)
    assert r.matches[0].id == "f7" and len(r.matches) == 2
    assert r.image.size == (28, 28) and r.state == "ready" and r.trained_count == 20
    assert r.recall is None  # only kind pc reports what its recall did
    assert float(np.mean((r.array - original) ** 2)) < 0.005
    exact = ams.retrieve(name, noisy, include_vector=True)
    assert exact.pattern.vector.shape == (784,) and exact.array.shape == (1, 28, 28)

    known = np.zeros((28, 28), bool)
    known[:14] = True  # the top half
    for mask in (known, png_bytes(known[None].astype(np.float32))):  # booleans, or a mask picture
        half = ams.retrieve(name, torch.from_numpy(original * known), mask=mask, k=1)
        assert half.matches[0].id == "f7"
    by_picture = ams.retrieve(name, png_bytes(noisy), k=1)  # a picture cue, fitted by the service
    assert by_picture.matches[0].id == "f7"

    found = ams.search(name, noisy, k=5)
    assert found[0].id == "f7" and len(found) == 5
    assert all(a.score >= b.score for a, b in itertools.pairwise(found))

    done = ams.complete(name, original * known, mask=known)
    assert done.unknown_pixels == 28 * 14 and done.matches[0].id == "f7"
    np.testing.assert_array_equal(done.array[:, :14], original[:, :14])  # known pixels as given
    assert float(np.mean((done.array - original) ** 2)) < 0.001
    rgba = Image.fromarray(
        np.dstack([np.rint(original[0] * 255).astype(np.uint8)] * 3 + [known.astype(np.uint8) * 255]), "RGBA"
    )
    by_alpha = ams.complete(name, rgba)  # alpha 0 marks the pixels to fill
    assert by_alpha.unknown_pixels == 28 * 14 and by_alpha.matches[0].id == "f7"
    with pytest.raises(ValidationError) as err:
        ams.complete(name, original)
    assert err.value.code == "mask_required"


def test_lookup_both_ways(ams, fresh, pictures) -> None:
    name = fresh("captions")
    ams.create_memory(name, (1, 28, 28), text=True)
    captions = [
        "a short sleeved t-shirt",
        "long trousers for the legs",
        "a warm woollen pullover",
        "a summer dress",
        "an ankle boot with a heel",
    ]
    ams.store(name, pictures[:5], ids=["p0", "p1", "p2", "p3", "p4"], texts=captions)

    by_text = ams.lookup(name, text="trousers to wear on the legs", k=2)
    assert by_text.query == "text" and by_text.captions is None
    assert by_text.patterns[0].id == "p1" and by_text.patterns[0].text == captions[1]
    np.testing.assert_array_equal(by_text.patterns[0].array, pictures[1])
    assert by_text.completion.image.size == (28, 28)

    known = np.zeros((28, 28), bool)
    known[:14] = True
    by_image = ams.lookup(name, image=pictures[4] * known, mask=known, k=3)
    assert by_image.query == "image" and by_image.patterns is None  # an image memory's query, as numbers
    assert by_image.captions[0].id == "p4" and by_image.captions[0].text == captions[4]
    by_picture = ams.lookup(name, image=png_bytes(pictures[4]))
    assert by_picture.query == "image" and by_picture.captions[0].id == "p4"
    with pytest.raises(ValueError):
        ams.lookup(name)


def test_train_wait_cancel_and_jobs(ams, fresh) -> None:
    name = fresh("pc")
    ams.create_memory(name, 16, kind="pc", config={"sizes": [8, 16, 16], "epochs": 30})
    rng = np.random.default_rng(2)
    patterns = (rng.random((4, 16)) > 0.5).astype(np.float32)
    ams.store(name, patterns, ids=["a", "b", "c", "d"])
    assert ams.get_memory(name).state == "untrained"
    with pytest.raises(Conflict) as err:
        ams.retrieve(name, patterns[0])
    assert err.value.code == "not_trained"

    job = ams.train(name)
    assert isinstance(getattr(job, "_target", job), (Job, AsyncJob))
    assert job.memory == name and job.kind == "train" and job.status in ("queued", "running")
    assert job.stop_reason is None  # unfinished
    assert job.id in [j.id for j in ams.jobs(memory=name)]
    assert ams.job(job.id).id == job.id
    job.wait(progress=False, timeout=120)
    assert job.status == "succeeded" and job.epoch == 30 and job.progress == 1.0 and job.done
    assert job.stop_reason == "epochs"
    assert job.energy is not None and job.finished_at >= job.started_at
    assert ams.job(job.id).status == "succeeded"
    assert job.refresh().status == "succeeded"
    assert ams.get_memory(name).state == "ready"
    recalled = ams.retrieve(name, patterns[2], k=4)  # the trained model answers (how well: not the client's)
    assert (
        recalled.state == "ready"
        and recalled.trained_count == 4
        and {m.id for m in recalled.matches} == set("abcd")
    )
    report = recalled.recall  # kind pc says what its recall did; its nearest is one of the stored
    assert report is not None and report.index and report.nearest.id in set("abcd")
    assert isinstance(report.stored, bool) and isinstance(report.unique, bool)

    long = ams.train(name, epochs=100_000)
    cancelled = ams.cancel_job(long.id)
    assert cancelled.id == long.id
    with pytest.raises(JobFailed) as err:
        long.wait(progress=False, timeout=120)
    assert err.value.code == "job_cancelled" and long.status == "cancelled" and err.value.status is None
    assert long.stop_reason == "cancelled" and err.value.job.stop_reason == "cancelled"
    again = ams.train(name, epochs=100_000)
    with pytest.raises(JobFailed) as err:
        again.wait(progress=False, timeout=0.05)
    assert err.value.code == "job_timeout"
    again.cancel()
    assert again.wait(progress=False, raise_on_failure=False, timeout=120).status == "cancelled"
    hopfield = fresh("hop")
    ams.create_memory(hopfield, 4)
    with pytest.raises(ValidationError) as err:
        ams.train(hopfield)
    assert err.value.code == "not_trainable"


def test_demo_presets_and_load(ams, fresh) -> None:
    presets = {p.name: p for p in ams.demo_presets()}
    assert presets["fashion"].shape == (1, 28, 28) and presets["fashion"].max_count >= 20
    name = fresh("demo")
    memory, job = ams.create_demo("fashion", name=name, count=20)
    assert memory.name == name and memory.count == 0 and job.kind == "demo"
    job.wait(progress=False, timeout=120)
    assert job.status == "succeeded" and job.stop_reason == "done" and ams.get_memory(name).count == 20
