"""Fuzz of the checkpoint loaders: 1,800 damaged copies of a real PC memory checkpoint, of a real
PCGraph checkpoint and of a real BoxE (relational) checkpoint (random byte flips, truncations, and edits of the safetensors header: its
length field, dtypes, shapes, offsets, and the metadata's config, counters and format), half
of them with their checksum (``memory_core.digest``) taken out first, as in a checkpoint
written before checksums were kept, so that the damage meets the loaders' other checks.

Each must either load into a model whose every tensor is finite and which recalls, or be
refused with ValueError (OSError: unreadable); any other exception, and any attempt to
allocate more than the file holds, is a failure. That is what lets the service mark one
memory failed (kinds/trained.py) instead of failing, or running out of memory, as a whole.
"""

from __future__ import annotations

import json
import random
import resource
from pathlib import Path

import pytest
import torch

from memory_core import EmptyMemoryError, PCGraph, PCMemory, digest
from memory_core.boxe import BoxE, BoxEConfig

CASES = 300  # per loader, with and without a checksum

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    patterns = torch.rand(8, 16)
    pc = PCMemory([4, 8, 16], device="cpu", epochs=3)
    pc.fit(patterns, progress=False)
    pc.save(folder / "pc.safetensors")
    graph = PCGraph(dim=16, hidden=6, epochs=2, device="cpu")
    graph.fit(patterns, progress=False)
    graph.save(folder / "graph.safetensors")
    kb = BoxE(config=BoxEConfig(dim=8, epochs=2, negatives=2, batch_size=8), device="cpu")
    kb.add_facts([("near", (f"e{i}", f"e{(i + 1) % 6}")) for i in range(6)] + [("on", ("e0", "e1", "e2"))])
    kb.fit(progress=False)
    kb.save(folder / "kb.safetensors")
    # safetensors writes its header's keys in a random order: sorted, every run fuzzes the same bytes
    return {name: _canonical((folder / f"{name}.safetensors").read_bytes()) for name in ("pc", "graph", "kb")}


def _canonical(data: bytes) -> bytes:
    n, header = _header(data)
    text = json.dumps(header, sort_keys=True).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def _header(data: bytes) -> tuple[int, dict]:
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8 : 8 + n])


def _with_header(data: bytes, header: dict) -> bytes:
    n, _ = _header(data)
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


_WILD = [0, -1, 1, 2**31, 2**63, 2**70, 1e308, float("nan"), "x", None, [], {}, True, [16000, 16000, 4]]


def _edit_header(rng: random.Random, data: bytes) -> bytes:
    """One edit of the JSON header: a tensor's dtype, shape or offsets, or a metadata field."""
    _, header = _header(data)
    names = [k for k in header if k != "__metadata__"]
    what = rng.choice(["dtype", "shape", "offsets", "meta", "meta", "config", "drop", "add"])
    if what == "dtype":
        header[rng.choice(names)]["dtype"] = rng.choice(["F16", "BF16", "F64", "I64", "U8", "BOOL", "Q9"])
    elif what == "shape":
        t = header[rng.choice(names)]
        t["shape"] = rng.choice(
            [[], [0], [10**9], [10**6, 10**6], [-1], [t["shape"][0] if t["shape"] else 1, 2, 2]]
        )
    elif what == "offsets":
        t = header[rng.choice(names)]
        t["data_offsets"] = [rng.choice([0, 4, 2**40, -8]), rng.choice([0, 4, 2**40, 2**63])]
    elif what in ("meta", "config"):
        meta = header.setdefault("__metadata__", {})
        if what == "config" and "config" in meta:
            config = json.loads(meta["config"])
            config[rng.choice([*config, "unknown"])] = rng.choice(_WILD)
            meta["config"] = json.dumps(config)
        else:
            meta[rng.choice([*meta, "dtype", "format"])] = str(rng.choice(_WILD))
    elif what == "drop":
        del header[rng.choice(names)]
    else:
        header["extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    return _with_header(data, header)


def damaged(rng: random.Random, data: bytes) -> bytes:
    kind = rng.choice(["flip", "flip", "truncate", "header", "header", "header", "length"])
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "length":
        return rng.choice([0, 7, 2**40, 2**64 - 1, len(data)]).to_bytes(8, "little") + data[8:]
    return _edit_header(rng, data)


def _tensors(model) -> list[torch.Tensor]:
    values = list(vars(model).values())
    listed = [t for ts in values if isinstance(ts, list) for t in ts]
    return [t for t in values + listed if isinstance(t, torch.Tensor)]


def _finite_and_usable(model, dim: int) -> None:
    assert all(bool(torch.isfinite(t).all()) for t in _tensors(model) if t.is_floating_point())
    if isinstance(model, BoxE):  # a relational memory answers a query over its own vocabulary
        if model.is_trained and model.relations:
            relation, arity = next(iter(model.relations.items()))
            args = [model.entities[0], *([None] if arity > 1 else [])] + [model.entities[0]] * (arity - 2)
            ranked = model.complete(relation, args if arity > 1 else [None], k=len(model.entities))
            assert len(ranked) == len(model.entities)
        return
    try:
        out = model.retrieve(torch.rand(2, dim))
    except EmptyMemoryError:  # its counters say untrained: recalls are refused, as they should be
        return
    # Finite weights can still be absurd (a flipped exponent bit: 1e38) and recall NaN from
    # them: only a checksum tells; the service answers such a recall 422 non_finite_result.
    assert out.shape == (2, dim)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b), strict=True))


def _without_digest(data: bytes) -> bytes:
    _, header = _header(data)
    header["__metadata__"].pop(digest.KEY)
    return _with_header(data, header)


@pytest.mark.parametrize("checksum", [True, False], ids=["checksum", "no-checksum"])
@pytest.mark.parametrize("kind", ["pc", "graph", "kb"])
def test_damaged_checkpoints_load_whole_or_are_refused(kind, checksum, checkpoints, tmp_path):
    cls = {"pc": PCMemory, "graph": PCGraph, "kb": BoxE}[kind]
    rng = random.Random(f"fuzz-{kind}-{checksum}")
    original = checkpoints[kind] if checksum else _without_digest(checkpoints[kind])
    path = tmp_path / "whole.safetensors"
    path.write_bytes(original)
    whole = cls.load(path, device="cpu")
    _finite_and_usable(whole, 16)  # undamaged, it loads
    path = tmp_path / "damaged.safetensors"
    outcomes = {"loaded": 0, "refused": 0}
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:  # an allocation far beyond the file (a damaged config's sizes) fails loudly
        resource.setrlimit(resource.RLIMIT_AS, (_mapped() + (3 << 30), hard))
        for case in range(CASES):
            data = damaged(rng, original)
            path.write_bytes(data)
            try:
                model = cls.load(path, device="cpu")
            except (ValueError, OSError):
                outcomes["refused"] += 1
                continue
            except BaseException as exc:  # the fuzz's finding: say which case
                raise AssertionError(f"case {case}: {type(exc).__name__}: {exc}") from exc
            _finite_and_usable(model, 16)
            # With a checksum only edits that change nothing load (a value set to what it was).
            assert not checksum or _same(model, whole), f"case {case}: damage loaded past the checksum"
            outcomes["loaded"] += 1
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    # Without a checksum, flips in the weights' bits are caught only where they make a
    # non-finite number (the rest loads: finite, usable); most damage is refused either way.
    assert outcomes["refused"] > CASES / 2, outcomes
    assert sum(outcomes.values()) == CASES


def _mapped() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("kind", ["pc", "graph", "kb"])
def test_a_damaged_digest_key_does_not_pass_for_an_old_checkpoint(kind, checkpoints, tmp_path):
    """The case CI's fuzz found: one flipped bit turned ``sha256`` into ``sha2u6``, and the
    file, its weights also damaged, loaded as a checkpoint written before digests were kept."""
    cls = {"pc": PCMemory, "graph": PCGraph, "kb": BoxE}[kind]
    _, header = _header(checkpoints[kind])
    meta = header["__metadata__"]
    meta["sha2u6"] = meta.pop(digest.KEY)
    data = bytearray(_with_header(checkpoints[kind], header))
    data[-3] ^= 1  # a low mantissa bit of the last weight: finite, and wrong
    path = tmp_path / "renamed.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="never wrote"):
        cls.load(path, device="cpu")
    path.write_bytes(_without_digest(checkpoints[kind]))  # a true pre-digest checkpoint loads
    _finite_and_usable(cls.load(path, device="cpu"), 16)
