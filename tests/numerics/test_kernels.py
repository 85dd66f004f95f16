"""The fast paths of the Hopfield core against plain references, on real data.

- the compiled masked-L1 kernel and its torch fallback against a float64 broadcast sum;
- manhattan and euclidean search / retrieval (kernel, cached key norms, rank-then-finish,
  sparse softmax accumulation) against the dense formulas;
- the one-pass manhattan + softmax kernel (``l1_softmax``) against the two-pass path it
  replaces and a float64 softmax, and that retrieval / energy really take it;
- the kernel builds from scratch into an empty cache (as on a fresh machine), loads
  prebuilt without a compiler, and without either the torch path answers.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from memory_core import UniversalHopfield, chunked, kernels, similarity
from memory_core.data import fashion_mnist
from memory_core.kernels import kernel_available, l1_distances, l1_distances_torch, l1_softmax
from memory_core.masks import pixel_mask_to_vector, random_known_pixels
from memory_core.similarity import manhattan_scale

needs_gcc = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None,
    reason="no C compiler: the torch fallback is used (and tested below)",
)


def reference_l1(keys: torch.Tensor, cue: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """sum_d mask * |cue - key| in float64, one (B, N, D) block: the textbook formula."""
    diff = (cue.double()[:, None, :] - keys.double()[None]).abs()
    if mask is not None:
        diff = diff * mask[:, None, :]
    return diff.sum(dim=2)


def _mask(shape, seed, p=0.5):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p


@needs_gcc
def test_kernel_builds_here():
    assert kernel_available(), kernels.kernel_info()
    assert kernels.kernel_info()["isa"] in ("avx512", "avx2", "baseline")


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 37])
@pytest.mark.parametrize("masked", [False, True])
def test_l1_kernel_equals_reference(batch, masked, fashion_vectors, patch_vectors):
    """Every register-tile remainder: cues not a multiple of 4, patterns not a multiple of
    3 or 4, dimensions with a tail after the last full vector (3067, 5, 3)."""
    cases = [
        (fashion_vectors[:101], fashion_vectors[1000 : 1000 + batch]),  # D = 784
        (patch_vectors[:53, :3067], patch_vectors[400 : 400 + batch, :3067]),  # D = 3067
        (fashion_vectors[:30, 200:205], fashion_vectors[1500 : 1500 + batch, 200:205]),  # D = 5
        (fashion_vectors[:7, 400:403], fashion_vectors[1600 : 1600 + batch, 400:403]),
    ]  # D = 3
    for keys, cue in cases:
        mask = _mask(cue.shape, batch) if masked else None
        if mask is not None:
            mask[:, 0] = True  # at least one known entry per cue
        want = reference_l1(keys, cue, mask)
        # The kernel sums in W lanes (relative error ~1e-6 over 3067 terms); cdist, the
        # unmasked fallback, sums in one float32 chain (~2e-5).
        for got, rtol in ((l1_distances(keys, cue, mask), 1e-5), (l1_distances_torch(keys, cue, mask), 1e-4)):
            assert got.shape == want.shape and got.dtype == torch.float32
            assert torch.allclose(got.double(), want, rtol=rtol, atol=1e-4)


def test_l1_kernel_on_non_contiguous_inputs(patch_vectors):
    keys = patch_vectors[:40].T.contiguous().T  # same values, column-major
    cue = patch_vectors[100:110:2]  # strided rows
    assert torch.allclose(l1_distances(keys, cue).double(), reference_l1(keys, cue, None), rtol=1e-5)


def test_masked_fallback_works_in_bounded_blocks(monkeypatch, fashion_vectors):
    """The torch fallback splits the (B, N, D) block by patterns; the result is unchanged."""
    monkeypatch.setattr(kernels, "_FALLBACK_BUDGET", 784 * 3 * 5)  # 5 patterns per block
    keys, cue = fashion_vectors[:23], fashion_vectors[100:103]
    mask = _mask(cue.shape, 3)
    assert torch.allclose(
        l1_distances_torch(keys, cue, mask).double(), reference_l1(keys, cue, mask), rtol=1e-5, atol=1e-4
    )


def test_manhattan_similarity_rescales_masked_scores(fashion_vectors):
    """-(D / k) * masked L1, k = known entries per cue: a quarter-known cue is on the same
    scale as a whole one."""
    keys, cue = fashion_vectors[:50], fashion_vectors[60:64]
    mask = pixel_mask_to_vector(
        random_known_pixels(4, 28, 28, 0.25, generator=torch.Generator().manual_seed(0)), 1
    )
    k = mask.sum(dim=1, keepdim=True).double()
    want = -reference_l1(keys, cue, mask) * (784 / k)
    assert torch.allclose(similarity("manhattan", keys, cue, mask).double(), want, rtol=1e-5)


@pytest.mark.parametrize("sim", ["manhattan", "euclidean"])
@pytest.mark.parametrize("masked", [False, True])
def test_search_equals_dense_scores(sim, masked, patch_vectors):
    """Chunked rank-then-finish search (with cached key norms) = top-k of the dense scores."""
    keys, cue = patch_vectors[:300], patch_vectors[:12] + 0.05
    mask = (
        pixel_mask_to_vector(
            random_known_pixels(12, 32, 32, 0.3, generator=torch.Generator().manual_seed(1)), 3
        )
        if masked
        else None
    )
    m = UniversalHopfield(sim, "softmax", device="cpu", chunk_size=64)
    m.store(keys)
    scores, idx = m.search(cue, k=5, mask=mask)
    dense = similarity(sim, keys.double(), cue.double(), mask)  # (B, N), float64: the reference
    want_scores, want_idx = dense.topk(5, dim=1)
    assert torch.allclose(scores.double(), want_scores, rtol=1e-5, atol=1e-4)
    assert torch.equal(idx, want_idx)


def test_cached_key_norms_follow_store_and_remove(fashion_vectors):
    """Euclidean search uses the cached squared norms: they must track appends and removals."""
    m = UniversalHopfield("euclidean", "max", device="cpu", chunk_size=32)
    for start in range(0, 200, 23):
        m.store(fashion_vectors[start : min(start + 23, 200)])
    m.remove(list(range(0, 200, 3)))
    keys = m.keys
    cue = fashion_vectors[1:200:3] + 0.1
    want = torch.cdist(cue, keys)
    scores, idx = m.search(cue, k=1)
    assert torch.equal(idx[:, 0], want.argmin(dim=1))
    assert torch.allclose(-scores[:, 0], want.min(dim=1).values, atol=1e-3)
    m.clear()
    m.store(fashion_vectors[500:510])
    assert torch.equal(m.search(fashion_vectors[503:504], k=1)[1], torch.tensor([[3]]))


@pytest.mark.parametrize(
    "sim,beta",
    [("manhattan", 1.0), ("manhattan", 0.01), ("euclidean", 10.0), ("euclidean", 0.05), ("dot", 0.3)],
)
@pytest.mark.parametrize("masked", [False, True])
def test_softmax_retrieve_equals_dense_formula(sim, beta, masked, fashion_vectors):
    """Sharp betas take the sparse path (only non-underflowed weights are gathered), soft
    ones the dense matmul; both equal softmax(beta s) @ values."""
    keys, cue = fashion_vectors[:700], fashion_vectors[:9] * 0.8 + 0.1
    mask = _mask(cue.shape, 7) if masked else None
    m = UniversalHopfield(sim, "softmax", beta=beta, device="cpu", chunk_size=128)
    m.store(keys)
    weights = torch.softmax(beta * similarity(sim, keys, cue, mask).double(), dim=1)  # (B, N)
    assert torch.allclose(m.retrieve(cue, mask=mask).double(), weights @ keys.double(), atol=2e-5)


def test_sparse_accumulation_gathers_only_weighted_rows(fashion_vectors):
    """With a sharp beta nearly every weight underflows to exactly 0 and the result is a
    stored pattern; the hetero values prove which rows were used."""
    keys = fashion_vectors[:400]
    values = torch.arange(400, dtype=torch.float32)[:, None].expand(400, 3).contiguous()
    m = UniversalHopfield("manhattan", "softmax", beta=5.0, device="cpu", chunk_size=50)
    m.store(keys, values)
    out = m.retrieve(keys[[7, 123, 399]] + 0.02)
    assert torch.equal(out, torch.tensor([[7.0] * 3, [123.0] * 3, [399.0] * 3]))


@pytest.mark.parametrize("sim", ["euclidean", "manhattan"])
def test_sparse_softmax_path_is_taken_only_when_exact(sim, fashion_vectors):
    """Sharp beta: the m best patterns are taken and every other weight is exactly 0 in
    float32; soft beta: the check refuses and the dense path runs."""
    from memory_core.chunked import _sparse_candidates
    from memory_core.separation import Softmax

    keys, cue = fashion_vectors[:500], fashion_vectors[10:14] + 0.05
    m = UniversalHopfield(sim, "max", device="cpu")
    ranks = m.sim.rank(keys, cue)
    start = torch.full((4, 1), -float("inf"))
    sharp = Softmax(beta=100.0 if sim == "euclidean" else 5.0)
    logits, rows, exact = _sparse_candidates(keys, ranks, cue, None, m.sim, sharp, start)
    assert exact.all()
    # Reference scores computed directly in float64 (no expanded form): (B, N).
    diff = keys.double()[None, :, :] - cue.double()[:, None, :]  # (B, N, D)
    exact_scores = -(diff.norm(dim=2) if sim == "euclidean" else diff.abs().sum(dim=2))
    dense = torch.exp(sharp.logits(exact_scores, True) - logits[:, :1].double())  # (B, N)
    outside = torch.ones_like(dense, dtype=torch.bool).scatter_(1, rows, False)
    assert (dense[outside] < 1e-40).all()
    # float32 sums against float64: the best weight is 1 to beta x 1e-5
    assert torch.allclose(dense.gather(1, rows)[:, 0], torch.ones(4, dtype=torch.float64), rtol=1e-3)
    assert not _sparse_candidates(keys, ranks, cue, None, m.sim, Softmax(beta=1e-3), start)[2].any()


def test_softmax_retrieve_mixes_sparse_and_dense_cues(fashion_vectors):
    """One batch where some cues have a clear best pattern (sparse path) and others sit
    among many near-equal ones (dense path, here cues far from everything): each cue's
    output still equals the dense formula."""
    from memory_core.chunked import _sparse_candidates

    keys = fashion_vectors[:600]
    near = fashion_vectors[[3, 70, 150]] + 0.01
    far = torch.full((2, 784), 0.5) + 0.3 * torch.randn(2, 784, generator=torch.Generator().manual_seed(2))
    cue = torch.cat([near, far])
    m = UniversalHopfield("euclidean", "softmax", beta=30.0, device="cpu", chunk_size=200)
    m.store(keys)
    exact = _sparse_candidates(
        keys[:200], m.sim.rank(keys[:200], cue), cue, None, m.sim, m.sep, torch.full((5, 1), -float("inf"))
    )[2]
    assert exact[:3].all() and not exact[3:].any(), exact
    weights = torch.softmax(30.0 * similarity("euclidean", keys, cue).double(), dim=1)
    assert torch.allclose(m.retrieve(cue).double(), weights @ keys.double(), atol=2e-5)


# --- one-pass manhattan + softmax ---------------------------------------------------

# 1499 stored images: not a multiple of the kernel's block (20 rows of 784 floats).
FUSED_N = 1499


@pytest.fixture(scope="module")
def label_values(fashion_vectors) -> torch.Tensor:
    """Hetero values for the first FUSED_N images, (N, 59): one-hot label (10) and the
    image average-pooled to 7x7 (49). 59 floats: a 2-vector tile, a 1-vector tile and a
    tail for both AVX-512 (32 + 16 + 11) and AVX2 (3 x 16 + 8 + 3)."""
    labels = fashion_mnist("train", limit=FUSED_N)[1]
    pooled = torch.nn.functional.avg_pool2d(fashion_vectors[:FUSED_N].view(-1, 1, 28, 28), 4).flatten(1)
    return torch.cat([torch.nn.functional.one_hot(labels, 10).float(), pooled], dim=1).contiguous()


class _Spy:
    """Wraps the real ``l1_softmax`` in memory_core.chunked and records what it returned."""

    def __init__(self, monkeypatch):
        self.results = []
        monkeypatch.setattr(chunked, "l1_softmax", self)

    def __call__(self, *args):
        result = l1_softmax(*args)
        self.results.append(result)
        return result

    @property
    def fused(self) -> int:
        return sum(r is not None for r in self.results)


def _fused_cues(fashion_vectors, batch: int, masked: bool):
    """(B, D) cues: the first is stored pattern 17 exactly, the rest noisy unstored
    images; a mask with ~40% known pixels per cue."""
    gen = torch.Generator().manual_seed(batch)
    cue = fashion_vectors[1600 : 1600 + batch] + 0.1 * torch.randn(batch, 784, generator=gen)
    cue[0] = fashion_vectors[17]
    return cue.contiguous(), (_mask(cue.shape, batch, p=0.4) if masked else None)


@needs_gcc
@pytest.mark.parametrize("batch", [1, 3, 6, 8])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("hetero", [False, True])
@pytest.mark.parametrize("beta", [0.01, 1.0, 50.0])
def test_fused_softmax_equals_two_pass(batch, masked, hetero, beta, monkeypatch, fashion_vectors, label_values):
    """Retrieval and energy from the one-pass kernel = the two-pass chunked path
    (distances, then weights @ values) = float64 softmax(beta s) @ values, for soft
    (every weight counts), capacity-tuned and very sharp betas (all but the best
    pattern's weights underflow). Batches 1, 3, 6, 8 cover every cue-tile remainder."""
    keys = fashion_vectors[:FUSED_N]
    values = label_values if hetero else None
    cue, mask = _fused_cues(fashion_vectors, batch, masked)
    m = UniversalHopfield("manhattan", "softmax", beta=beta, device="cpu")
    m.store(keys, values)

    spy = _Spy(monkeypatch)
    out, energy = m.retrieve(cue, mask=mask), m.energy(cue, mask=mask)
    assert spy.fused == 2, "retrieve and energy should both take the one-pass kernel"
    with monkeypatch.context() as two_pass:
        two_pass.setattr(kernels, "FUSED_MAX_BATCH", 0)
        out_2, energy_2 = m.retrieve(cue, mask=mask), m.energy(cue, mask=mask)
    assert spy.fused == 2 and len(spy.results) == 4  # the kernel declined: two-pass path

    logits = beta * similarity("manhattan", keys.double(), cue.double(), mask)  # (B, N)
    want_out = torch.softmax(logits, dim=1) @ m.values.double()  # (B, Dv)
    want_energy = -torch.logsumexp(logits, dim=1) / beta  # (B,)
    assert out.shape == want_out.shape and out.dtype == torch.float32
    assert torch.allclose(out, out_2, atol=2e-5)
    assert torch.allclose(out.double(), want_out, atol=2e-5)
    assert torch.allclose(energy, energy_2, rtol=1e-5)
    assert torch.allclose(energy.double(), want_energy, rtol=1e-5)
    if beta == 50.0:  # the stored cue recalls itself (its value) exactly: every other weight is 0
        assert torch.equal(out[0], m.values[17])


@needs_gcc
def test_fused_softmax_parts_merge_across_threads(fashion_vectors):
    """The kernel splits the patterns into one range per thread and merges their running
    sums; 1, 2 and 3 ranges give the same result, also when the best pattern's range
    outweighs the others by far more than float32 can hold (beta 50)."""
    keys = fashion_vectors[:FUSED_N]
    cue, mask = _fused_cues(fashion_vectors, 5, masked=True)
    scale = manhattan_scale(cue, mask)
    before = torch.get_num_threads()
    try:
        for beta in (0.05, 50.0):
            results = []
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                results.append(l1_softmax(keys, keys, cue, mask, scale, beta))
            logits = beta * similarity("manhattan", keys.double(), cue.double(), mask)
            want = torch.softmax(logits, dim=1) @ keys.double()
            for out, lmax, lsum in results:
                assert torch.allclose(out.double(), want, atol=2e-5)
                assert torch.allclose(lmax + lsum.log(), torch.logsumexp(logits, dim=1), rtol=1e-6)
    finally:
        torch.set_num_threads(before)


@needs_gcc
def test_fused_softmax_is_used_only_where_it_applies(monkeypatch, fashion_vectors):
    """The one-pass kernel answers manhattan + softmax in float32 on the CPU for batches up
    to FUSED_MAX_BATCH, and its answer is what retrieve returns; it declines larger
    batches and float64, and is not asked for other similarities or separations."""
    keys = fashion_vectors[:600]
    cue = fashion_vectors[700:704] + 0.05
    spy = _Spy(monkeypatch)
    m = UniversalHopfield("manhattan", "softmax", beta=1.0, device="cpu")
    m.store(keys)
    out = m.retrieve(cue)
    direct, _, _ = l1_softmax(keys, keys, cue, None, manhattan_scale(cue, None), 1.0)
    assert spy.fused == 1 and torch.equal(out, direct)

    monkeypatch.setattr(kernels, "FUSED_MAX_BATCH", 3)  # 4 cues: over the limit
    m.retrieve(cue)
    assert spy.results[-1] is None and spy.fused == 1

    m64 = UniversalHopfield("manhattan", "softmax", beta=1.0, device="cpu", dtype=torch.float64)
    m64.store(keys)
    m64.retrieve(cue[:1])
    assert spy.results[-1] is None and spy.fused == 1

    calls = len(spy.results)
    for sim, sep in (("euclidean", "softmax"), ("manhattan", "polynomial"), ("manhattan", "max")):
        other = UniversalHopfield(sim, sep, device="cpu")
        other.store(keys)
        other.retrieve(cue[:1])
    assert len(spy.results) == calls


@needs_gcc
def test_kernel_builds_into_an_empty_cache(tmp_path):
    """As on a fresh machine: compile into an empty cache, load, compute."""
    code = (
        "import torch; from memory_core.kernels import kernel_info, l1_distances; "
        "x = torch.rand(9, 20); d = l1_distances(x, x[:2]); "
        "assert torch.allclose(d, torch.cdist(x[:2], x, p=1), atol=1e-5); print(kernel_info()['path'])"
    )
    env = dict(os.environ, AMS_KERNEL_CACHE=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(tmp_path)) and os.path.exists(run.stdout.strip())


def test_prebuilt_kernels_load_without_a_compiler(tmp_path, monkeypatch, fashion_vectors, label_values):
    """What the Docker image does: compile every vector width ahead of time, then load the
    one this CPU runs in a process that has no compiler at all. Every variant this CPU
    can run (AVX-512, AVX2, baseline: other tile remainders) gives the same results."""
    from memory_core.kernels import prebuild

    built = prebuild(tmp_path / "kernels")
    assert sorted(p.name for p in built) == ["l1_distance-avx2.so", "l1_distance-avx512.so", "l1_distance-baseline.so"]
    keys, cue = fashion_vectors[:200], fashion_vectors[300:303]
    probe = (
        "import torch, json; from memory_core.kernels import kernel_info, l1_distances, l1_softmax;"
        f"k = torch.load({str(tmp_path / 'k.pt')!r}); q = torch.load({str(tmp_path / 'q.pt')!r});"
        "out, lmax, lsum = l1_softmax(k, k, q, None, -torch.ones(3), 0.1);"
        "torch.save((l1_distances(k, q), out), " + repr(str(tmp_path / "out.pt")) + "); print(json.dumps(kernel_info()))"
    )
    torch.save(keys, tmp_path / "k.pt")
    torch.save(cue, tmp_path / "q.pt")
    env = {"PATH": "/nonexistent", "CC": "/nonexistent/gcc", "AMS_KERNEL_PREBUILT": str(tmp_path / "kernels"),
           "AMS_KERNEL_CACHE": str(tmp_path / "empty-cache"), "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert info["compiler"] == "prebuilt" and info["path"].startswith(str(tmp_path / "kernels"))
    dist, fused = torch.load(tmp_path / "out.pt")
    want = torch.cdist(cue.double(), keys.double(), p=1)
    assert torch.allclose(dist.double(), want, rtol=1e-5)
    assert torch.allclose(fused.double(), torch.softmax(-0.1 * want, dim=1) @ keys.double(), atol=2e-5)

    keys, values = fashion_vectors[:FUSED_N], label_values
    cue, mask = _fused_cues(fashion_vectors, 5, masked=True)
    want_dist = reference_l1(keys, cue, mask)
    logits = 0.2 * similarity("manhattan", keys.double(), cue.double(), mask)
    want_out = torch.softmax(logits, dim=1) @ values.double()
    cpu = kernels._cpu_flags()
    monkeypatch.setattr(kernels, "_info", {})
    monkeypatch.setattr(kernels, "_tried", True)
    for path in built:
        isa = path.stem.split("-")[1]
        if not kernels._ISAS[isa][0] <= cpu:
            continue  # this CPU cannot run it
        monkeypatch.setattr(kernels, "_lib", kernels._load(path, isa, "prebuilt"))
        assert torch.allclose(l1_distances(keys, cue, mask).double(), want_dist, rtol=1e-5, atol=1e-4), isa
        out, _, _ = l1_softmax(keys, values, cue, mask, manhattan_scale(cue, mask), 0.2)
        assert torch.allclose(out.double(), want_out, atol=2e-5), isa


def test_without_compiler_or_prebuilt_kernel_torch_answers(tmp_path, fashion_vectors):
    """No compiler, no prebuilt kernel: one warning, then manhattan search and softmax
    retrieval / energy come from torch (the two-pass path), with the same results."""
    keys, cue = fashion_vectors[:300], fashion_vectors[400:403] + 0.05
    torch.save((keys, cue), tmp_path / "in.pt")
    probe = (
        "import json, warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "from memory_core import UniversalHopfield, kernels\n"
        f"keys, cue = torch.load({str(tmp_path / 'in.pt')!r})\n"
        "m = UniversalHopfield('manhattan', 'softmax', beta=0.1, device='cpu'); m.store(keys)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    out, energy, idx = m.retrieve(cue), m.energy(cue), m.search(cue, k=1)[1]\n"
        f"torch.save((out, energy, idx), {str(tmp_path / 'out.pt')!r})\n"
        "print(json.dumps(dict(info=kernels.kernel_info(), warnings=[str(w.message) for w in caught])))\n"
    )
    env = {"PATH": "/nonexistent", "CC": "/nonexistent/gcc", "AMS_KERNEL_CACHE": str(tmp_path / "empty-cache"),
           "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert "no C compiler" in report["info"]["error"] and "path" not in report["info"]
    assert len(report["warnings"]) == 1 and "using torch" in report["warnings"][0]
    out, energy, idx = torch.load(tmp_path / "out.pt")
    logits = -0.1 * torch.cdist(cue.double(), keys.double(), p=1)  # (B, N)
    assert torch.allclose(out.double(), torch.softmax(logits, dim=1) @ keys.double(), atol=2e-5)
    assert torch.allclose(energy.double(), -torch.logsumexp(logits, dim=1) / 0.1, rtol=1e-5)
    assert torch.equal(idx[:, 0], logits.argmax(dim=1))
