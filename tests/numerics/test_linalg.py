"""memory_core.linalg.linear: oneDNN's linear on the CPU equals torch's matmul."""

import pytest
import torch

from memory_core.linalg import linear, onednn_available


def test_onednn_is_used_on_this_machine():
    """The CPU wheel of torch ships oneDNN; the probe must accept it (else the speed-up
    that the benchmarks quote is gone)."""
    assert torch.backends.mkldnn.is_available()
    assert onednn_available()


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_linear_equals_addmm_on_real_data(batch, fashion_vectors):
    keys = fashion_vectors[:1500]  # (N, D), contiguous: the oneDNN path
    cue = fashion_vectors[1500 : 1500 + batch] + 0.1  # (B, D)
    bias = -(keys * keys).sum(1)  # (N,)
    want = torch.addmm(bias.double(), cue.double(), keys.double().T)
    got = linear(cue, keys, bias)
    assert got.shape == (batch, 1500) and got.dtype == torch.float32
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-3)
    assert torch.allclose(linear(cue, keys).double(), cue.double() @ keys.double().T, rtol=1e-5, atol=1e-3)


def test_fallbacks_give_the_same_result(fashion_vectors):
    """float64, a non-contiguous key view and autograd inputs take torch's matmul."""
    keys, cue = fashion_vectors[:500], fashion_vectors[600:604]
    assert torch.allclose(linear(cue.double(), keys.double()), cue.double() @ keys.double().T)
    strided = keys[:, ::2]  # (N, D/2), not contiguous
    assert torch.allclose(linear(cue[:, ::2], strided), cue[:, ::2] @ strided.T, rtol=1e-5, atol=1e-3)
    w = keys.clone().requires_grad_()
    linear(cue, w).sum().backward()
    assert torch.allclose(w.grad, cue.sum(0).expand_as(w))


@pytest.mark.parametrize("rows", [256, 499])  # 499: strips of unequal height
def test_gram_is_the_exactly_symmetric_product_of_the_rows(rows, patch_vectors):
    """gram(a) = a @ a.T from upper-triangle strips: equal to float64 to float32
    rounding, and exactly symmetric (the PC loop uses f G for f G^T)."""
    from memory_core.linalg import gram

    a = (patch_vectors[:rows] - 0.5).contiguous()  # (H, 3072) real pixels, centred
    got = gram(a)
    want = a.double() @ a.double().T
    assert got.shape == (rows, rows) and got.dtype == torch.float32
    assert torch.equal(got, got.T)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert torch.allclose(gram(a.double()), want)  # float64: torch.mm
