"""PCGraph's hand-written gradients against autograd (float64, a cyclic random graph, every
activation): dE/dx, dE/dW and dE/db of the hot loop are E's exact gradients."""

from __future__ import annotations

import pytest
import torch

from memory_core.pcgraph import ACTIVATIONS, PCGraph


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_hand_written_gradients_equal_autograd(activation):
    """dE/dx and dE/dW, dE/db of the hot loop are the exact gradients of E on a cyclic graph."""
    torch.manual_seed(0)
    g = PCGraph(5, 7, "random", density=0.4, activation=activation, device="cpu", dtype=torch.float64)
    g.weights = torch.randn(12, 12, dtype=torch.float64) * g.adjacency
    g.bias = torch.randn(12, dtype=torch.float64)
    x = torch.randn(4, 12, dtype=torch.float64) * 1.5  # (B, N); kinks hit with probability 0

    fx, eps, grad_x = g.energy_gradient(x)
    grad_w, grad_b = g.weight_gradients(fx, eps)

    xa = x.clone().requires_grad_(True)
    w = g.weights.clone().requires_grad_(True)
    b = g.bias.clone().requires_grad_(True)
    f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
         "hardtanh": lambda v: v.clamp(-1, 1), "linear": lambda v: v}[activation]
    energy = 0.5 * ((xa - (f(xa) @ (w * g.adjacency) + b)) ** 2).sum()
    ax, aw, ab = torch.autograd.grad(energy, (xa, w, b))
    assert torch.allclose(grad_x, ax, atol=1e-12)
    assert torch.allclose(grad_w * 4, aw * g.adjacency, atol=1e-12)  # the batch mean, on edges
    assert torch.allclose(grad_b * 4, ab, atol=1e-12)
    assert torch.allclose(g.state_energy(x).sum(), energy.detach())
