"""Universal Hopfield networks: equivalences, chunking, capacity on real data, classical instances."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from memory_core import (
    SIMILARITIES,
    EmptyMemoryError,
    HopfieldNetwork,
    SparseDistributedMemory,
    UniversalHopfield,
    modern_hopfield,
)
from memory_core.masks import bottom_half_unknown, pixel_mask_to_vector

SEPS = {
    "identity": {},
    "softmax": {"beta": 0.05},
    "polynomial": {"n": 3.0},
    "max": {},
    "topk": {"k": 4, "beta": 0.1},
}


# --- equivalence: chunked == dense ------------------------------------------------------------
@pytest.mark.parametrize("sim,sep", list(itertools.product(SIMILARITIES, SEPS)))
def test_chunked_equals_unchunked(sim, sep, fashion_vectors):
    """Running log-sum-exp / top-k merges over 7-pattern chunks give the one-pass result."""
    keys = fashion_vectors[:60].double()
    cue = fashion_vectors[300:304].double() + 0.05
    mask = torch.rand(cue.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    chunked = UniversalHopfield(sim, sep, device="cpu", dtype=torch.float64, chunk_size=7, **SEPS[sep])
    dense = UniversalHopfield(sim, sep, device="cpu", dtype=torch.float64, chunk_size=1000, **SEPS[sep])
    for m in (chunked, dense):
        m.store(keys)
    for msk in (None, mask):
        assert torch.allclose(chunked.retrieve(cue, msk), dense.retrieve(cue, msk), rtol=1e-9, atol=1e-9)
        assert torch.allclose(chunked.energy(cue, msk), dense.energy(cue, msk), rtol=1e-9, atol=1e-9)
        s1, i1 = chunked.search(cue, k=5, mask=msk)
        s2, _ = dense.search(cue, k=5, mask=msk)
        assert torch.allclose(s1, s2)
        # Ties (hamming distances are integers) may pick different rows: check that the
        # rows found really have the scores reported.
        assert torch.allclose(dense.sim(keys, cue, msk).gather(1, i1), s1)


@pytest.mark.parametrize("sim,sep", list(itertools.product(SIMILARITIES, SEPS)))
def test_retrieve_equals_dense_formula(sim, sep, fashion_vectors):
    """retrieve(q) = values^T sep(sim(keys, q)), written out densely."""
    m = UniversalHopfield(sim, sep, device="cpu", dtype=torch.float64, chunk_size=16, **SEPS[sep])
    keys = fashion_vectors[:40].double()
    cue = fashion_vectors[500:503].double()
    m.store(keys)
    weights = m.sep(m.sim(keys, cue), m.sim.is_distance)  # (B, N)
    assert torch.allclose(m.retrieve(cue), weights @ keys, rtol=1e-9, atol=1e-9)


# --- equivalence: textbook instances ----------------------------------------------------------
def test_softmax_dot_equals_attention(fashion_vectors, patch_vectors):
    """Modern Hopfield retrieval = scaled_dot_product_attention with scale beta (hetero)."""
    keys, values = fashion_vectors[:300], patch_vectors[:300]
    queries = fashion_vectors[1000:1016]
    beta = 0.02
    m = modern_hopfield(beta=beta, device="cpu", chunk_size=64)
    m.store(keys, values)
    want = F.scaled_dot_product_attention(queries[None], keys[None], values[None], scale=beta)[0]
    assert torch.allclose(m.retrieve(queries), want, atol=1e-5)


@pytest.mark.parametrize("sim", ["euclidean", "manhattan", "dot", "cosine"])
def test_max_separation_is_nearest_neighbour(sim, fashion_vectors):
    keys = fashion_vectors[:500]
    cues = fashion_vectors[500:540]
    m = UniversalHopfield(sim, "max", device="cpu", chunk_size=128)
    m.store(keys)
    if sim == "euclidean":
        best = torch.cdist(cues, keys).argmin(1)
    elif sim == "manhattan":
        best = torch.cdist(cues, keys, p=1).argmin(1)
    elif sim == "dot":
        best = (cues @ keys.T).argmax(1)
    else:
        best = F.normalize(cues, dim=1).matmul(F.normalize(keys, dim=1).T).argmax(1)
    assert torch.equal(m.retrieve(cues), keys[best])
    assert torch.equal(m.search(cues, k=1)[1][:, 0], best)


# --- capacity on real data ----------------------------------------------------------------
@pytest.fixture(scope="module")
def fashion_memory(fashion_vectors):
    # Masked distances to the nearest and the second-nearest image differ by >= 9.6 here,
    # so beta = 5 leaves weights of e^-48 off the right pattern: exact in float32.
    m = UniversalHopfield("manhattan", "softmax", beta=5.0, device="cpu")
    m.store(fashion_vectors[:1000])
    return m


def test_fashion_1000_bottom_half_masked_recalled_exactly(fashion_memory, fashion_vectors):
    stored = fashion_vectors[:1000]
    mask = pixel_mask_to_vector(bottom_half_unknown(28, 28), 1).expand(1000, -1)
    cue = torch.where(mask, stored, torch.zeros(()))
    out = fashion_memory.retrieve(cue, mask=mask)
    exact = (out - stored).abs().amax(dim=1) < 1e-5
    assert exact.all(), f"{int((~exact).sum())} of 1000 not recalled exactly"


def test_fashion_1000_noise_std_half_recalled(fashion_memory, fashion_vectors):
    stored = fashion_vectors[:1000]
    noisy = stored + 0.5 * torch.randn(stored.shape, generator=torch.Generator().manual_seed(0))
    out = fashion_memory.retrieve(noisy)
    correct = ((out - stored) ** 2).mean(dim=1) < 0.005
    assert correct.float().mean() >= 0.95


def test_energy_of_softmax_dot_decreases_under_iteration(fashion_vectors):
    """Ramsauer's energy never increases along the iterated update, on real noisy cues."""
    m = modern_hopfield(beta=0.002, device="cpu", dtype=torch.float64)
    m.store(fashion_vectors[:500].double())
    state = fashion_vectors[:64].double() + 0.3 * torch.randn(
        64, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    energies = [m.energy(state)]
    for _ in range(8):
        state = m.retrieve(state)
        energies.append(m.energy(state))
    e = torch.stack(energies)  # (T + 1, B)
    assert (e[1:] <= e[:-1] + 1e-9 * e[:-1].abs()).all()
    assert (e[-1] < e[0] - 1.0).all(), "the dynamics should actually move"


def test_iterated_retrieval_converges_to_a_fixed_point(fashion_vectors):
    m = modern_hopfield(beta=0.01, device="cpu")
    m.store(fashion_vectors[:200])
    out = m.retrieve(fashion_vectors[:8] + 0.2, steps=50, tol=1e-6)
    assert torch.allclose(m.retrieve(out), out, atol=1e-4)


def test_hetero_association_maps_images_to_labels(fashion_images):
    """Keys = images, values = one-hot labels: half-masked images recall their label."""
    from memory_core.data import fashion_mnist, flatten

    images, labels = fashion_mnist(limit=300)
    keys = flatten(images)
    m = UniversalHopfield("manhattan", "softmax", beta=1.0, device="cpu")
    m.store(keys, F.one_hot(labels, 10).float())
    mask = pixel_mask_to_vector(bottom_half_unknown(28, 28), 1).expand(300, -1)
    assert torch.equal(m.retrieve(keys, mask=mask).argmax(1), labels)


# --- storage ------------------------------------------------------------------------------------
def test_store_appends_and_remove_compacts(fashion_vectors):
    m = UniversalHopfield(device="cpu")
    for start in range(0, 100, 7):  # many small appends grow the buffer
        m.store(fashion_vectors[start : min(start + 7, 100)])
    assert len(m) == 100 and torch.equal(m.keys, fashion_vectors[:100])
    m.remove([0, 5, 99])
    keep = [i for i in range(100) if i not in (0, 5, 99)]
    assert len(m) == 97 and torch.equal(m.keys, fashion_vectors[keep])
    assert torch.equal(m.search(fashion_vectors[6:7], k=1)[1][0], torch.tensor([4]))
    with pytest.raises(IndexError):
        m.remove([97])


def test_device_and_dtype(fashion_vectors):
    m = UniversalHopfield(device="auto")
    assert m.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    m.store(fashion_vectors[:10])
    assert m.to("cpu").keys.device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="for GPUs"):
            UniversalHopfield(device="cpu", dtype=torch.float16)
        with pytest.raises(ValueError, match="CUDA is not available"):
            UniversalHopfield(device="cuda")


# --- clear errors -----------------------------------------------------------------------------
def test_errors_are_clear(fashion_vectors):
    m = UniversalHopfield(device="cpu")
    with pytest.raises(ValueError, match="beta must be a number, got 'x'"):
        UniversalHopfield(beta="x", device="cpu")
    with pytest.raises(ValueError, match="k must be a number, got None"):
        UniversalHopfield(separation="topk", k=None, device="cpu")
    with pytest.raises(EmptyMemoryError, match="empty"):
        m.retrieve(fashion_vectors[:1])
    with pytest.raises(ValueError, match=r"shape \(batch, dim\)"):
        m.store(fashion_vectors[0])
    m.store(fashion_vectors[:10])
    with pytest.raises(ValueError, match="dimension 783, expected 784"):
        m.retrieve(fashion_vectors[:1, :783])
    with pytest.raises(ValueError, match="NaN"):
        m.retrieve(torch.full((1, 784), float("nan")))
    with pytest.raises(TypeError, match="float tensor"):
        m.store(torch.ones(1, 784, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        m.retrieve([[0.0] * 784])
    with pytest.raises(TypeError, match="bool"):
        m.retrieve(fashion_vectors[:1], mask=torch.ones(1, 784))
    with pytest.raises(ValueError, match="no known entry"):
        m.retrieve(fashion_vectors[:1], mask=torch.zeros(1, 784, dtype=torch.bool))
    with pytest.raises(ValueError, match="auto-associative"):
        m.store(fashion_vectors[:2], fashion_vectors[:2])
    h = UniversalHopfield(device="cpu")
    h.store(fashion_vectors[:2], torch.ones(2, 3))
    with pytest.raises(ValueError, match="iterated retrieval"):
        h.retrieve(fashion_vectors[:1], steps=3)


# --- the classical Hopfield network (Hopfield 1982) ------------------------------------------
def _random_bipolar(n, d, seed):
    return torch.randint(0, 2, (n, d), generator=torch.Generator().manual_seed(seed)).float() * 2 - 1


def test_classical_weights_are_hebbian_with_zero_diagonal():
    xi = _random_bipolar(5, 40, 0)
    net = HopfieldNetwork(40, device="cpu")
    net.store(xi)
    want = sum(torch.outer(x, x) for x in xi) / 40
    want.fill_diagonal_(0)
    assert torch.allclose(net.weights, want)
    assert torch.allclose(net.energy(xi[:1]), -0.5 * xi[0] @ want @ xi[0])


def test_classical_async_energy_never_increases():
    xi = _random_bipolar(12, 100, 1)
    net = HopfieldNetwork(100, device="cpu")
    net.store(xi)
    state = _random_bipolar(4, 100, 2)
    gen = torch.Generator().manual_seed(0)
    energies = [net.energy(state)]
    for _ in range(5):
        state = net.retrieve(state, steps=1, mode="async", generator=gen)
        energies.append(net.energy(state))
    e = torch.stack(energies)
    assert (e[1:] <= e[:-1] + 1e-5).all()


def test_classical_sync_update_is_uhn_dot_identity_then_sign():
    xi = _random_bipolar(8, 64, 3)
    cue = _random_bipolar(5, 64, 4)
    net = HopfieldNetwork(64, zero_diagonal=False, device="cpu")
    net.store(xi)
    uhn = UniversalHopfield("dot", "identity", device="cpu")
    uhn.store(xi)
    field = uhn.retrieve(cue)  # M^T M q = D W q
    want = torch.where(field == 0, cue, torch.sign(field))  # a unit with zero field keeps its state
    assert torch.equal(net.retrieve(cue, steps=1, mode="sync"), want)


def test_classical_capacity_falls_off_near_0_14_d():
    """Bit accuracy of recall from 5%-flipped cues, averaged over trials, d = 300:
    near-perfect well below the critical load 0.138 d, collapsing well above it."""
    d = 300

    def bit_accuracy(alpha: float) -> float:
        accs = []
        for trial in range(3):
            xi = _random_bipolar(int(alpha * d), d, 10 + trial)
            net = HopfieldNetwork(d, device="cpu")
            net.store(xi)
            flip = torch.rand(xi.shape, generator=torch.Generator().manual_seed(trial)) < 0.05
            out = net.retrieve(torch.where(flip, -xi, xi), steps=50, mode="sync")
            accs.append((out == xi).float().mean().item())
        return sum(accs) / len(accs)

    curve = {a: bit_accuracy(a) for a in (0.05, 0.10, 0.14, 0.20, 0.30)}
    assert curve[0.05] == 1.0
    assert curve[0.10] > 0.99
    assert curve[0.20] < 0.95 and curve[0.30] < 0.85
    assert all(
        curve[a] >= curve[b] - 0.01 for a, b in [(0.05, 0.10), (0.10, 0.14), (0.14, 0.20), (0.20, 0.30)]
    )


# --- sparse distributed memory (Kanerva 1988) ------------------------------------------------
def test_sdm_matches_textbook_loops():
    dim, locations, radius = 32, 60, 13
    sdm = SparseDistributedMemory(dim, locations=locations, radius=radius, seed=5, device="cpu")
    data = _random_bipolar(6, dim, 6)
    sdm.store(data)
    # Textbook: counters of every location within the radius of the address get +data.
    counters = torch.zeros(locations, dim)
    for x in data:
        for loc in range(locations):
            if int((sdm.addresses[loc] != x).sum()) <= radius:
                counters[loc] += x
    assert torch.equal(sdm.counters, counters)
    cue = _random_bipolar(3, dim, 7)
    for q, got in zip(cue, sdm.read(cue)):
        total = torch.zeros(dim)
        for loc in range(locations):
            if int((sdm.addresses[loc] != q).sum()) <= radius:
                total += counters[loc]
        assert torch.equal(got, torch.where(total > 0, 1.0, -1.0))


def test_sdm_recalls_from_noisy_cues():
    dim = 256
    data = _random_bipolar(30, dim, 8)
    sdm = SparseDistributedMemory(dim, locations=3000, activation=0.02, seed=0, device="cpu")
    sdm.store(data)
    flip = torch.rand(data.shape, generator=torch.Generator().manual_seed(9)) < 0.1
    out = sdm.retrieve(torch.where(flip, -data, data), steps=3)
    assert (out == data).all(dim=1).float().mean() >= 0.95
