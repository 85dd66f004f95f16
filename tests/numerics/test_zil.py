"""Z-IL (memory_core.zil): inference learning equals backprop exactly, and only under its conditions.

Tiers: equivalence with autograd (float64 MLP and CNN on Fashion-MNIST, every supported
activation), the mechanism (errors move one layer per inference step), the broken
conditions (rate 0.99, the update at the wrong step) and bad input.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memory_core.data import fashion_mnist
from memory_core.zil import ACTIVATION_DERIVATIVES, ZILNetwork, zil_gradients

pytestmark = pytest.mark.usefixtures("one_thread")  # small matmuls (see conftest)


def backprop_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference: autograd's gradient of 0.5 * sum((model(x) - y)^2)."""
    model.zero_grad()
    loss = 0.5 * ((model(x) - y) ** 2).sum()
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return grads


def max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def scale(grads: dict[str, torch.Tensor]) -> float:
    return max(float(g.abs().max()) for g in grads.values())


@pytest.fixture(scope="module")
def fmnist() -> tuple[torch.Tensor, torch.Tensor]:
    """16 Fashion-MNIST images (float64, (16, 1, 28, 28)) and one-hot targets (16, 10)."""
    images, labels = fashion_mnist("test", limit=16)
    return images.double(), F.one_hot(labels, 10).double()


def make_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10)
    ).double()


def make_cnn() -> nn.Sequential:
    """Stride, padding ('same' too), dilation, groups, no bias, nested Sequential: all covered."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ELU(),
        nn.Conv2d(4, 6, 3, stride=2, groups=2),
        nn.SiLU(),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding="same", dilation=2, groups=3, bias=False), nn.Softplus()),
        nn.Flatten(),
        nn.Linear(6 * 13 * 13, 20),
        nn.LeakyReLU(0.1),
        nn.Linear(20, 10),
    ).double()


# --- equivalence with backprop ------------------------------------------------------------
@pytest.mark.parametrize("make", [make_mlp, make_cnn], ids=["mlp", "cnn"])
def test_zil_equals_backprop_to_round_off(make, fmnist):
    images, targets = fmnist
    model = make()
    zil = zil_gradients(model, images, targets)
    bp = backprop_gradients(model, images, targets)
    assert list(zil) == [name for name, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert zil[name].shape == p.shape and zil[name].dtype == torch.float64
    assert scale(bp) > 0.01  # the gradients are not trivially small
    assert max_gap(zil, bp) < 1e-13 * scale(bp)


@pytest.mark.parametrize("activation", list(ACTIVATION_DERIVATIVES), ids=lambda m: m.__name__)
def test_every_supported_activation_is_exact(activation, fmnist):
    images, targets = fmnist
    torch.manual_seed(1)
    # A ReLU6 / Hardtanh / ReLU kink is hit with probability 0 on these inputs.
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 24), activation(), nn.Linear(24, 10), activation()
    ).double()
    zil = zil_gradients(model, images, targets)
    bp = backprop_gradients(model, images, targets)
    assert max_gap(zil, bp) < 1e-13 * max(scale(bp), 1.0)


def test_float32_is_close_to_backprop(fmnist):
    images, targets = fmnist
    model = make_cnn().float()
    zil = zil_gradients(model, images.float(), targets.float())
    bp = backprop_gradients(model, images.float(), targets.float())
    assert max_gap(zil, bp) < 1e-5 * scale(bp)


def test_zil_uses_no_autograd_and_leaves_the_model_alone(fmnist):
    images, targets = fmnist
    model = make_mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = zil_gradients(model, images, targets)
    assert all(g.grad_fn is None and not g.requires_grad for g in grads.values())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


# --- the mechanism ------------------------------------------------------------------------
def test_errors_move_down_one_layer_per_step_and_equal_backprop_deltas(fmnist):
    """With rate 1 and zero initial errors, eps_l is 0 before step L-l and, at that step,
    equals minus backprop's delta (dLoss/d output of layer l)."""
    images, targets = fmnist
    model = make_mlp()
    net = ZILNetwork(model)

    # backprop's deltas at each Linear output
    outputs, h = [], images.clone()
    for m in model:
        h = m(h)
        if isinstance(m, nn.Linear):
            h.retain_grad()
            outputs.append(h)
    (0.5 * ((h - targets) ** 2).sum()).backward()
    deltas = [o.grad.detach() for o in outputs]

    state = net.feedforward(images, targets)
    depth = len(state.plan)  # 3 value nodes: outputs of the three Linear layers
    assert depth == 3 and [v.level for v in state.plan.vertices] == [2, 1, 0]
    for step in range(depth):
        eps = net.errors(state)
        for layer in range(depth):
            distance = depth - 1 - layer
            if distance > step:
                assert float(eps[layer].abs().max()) == 0.0  # the error has not arrived yet
            elif distance == step:
                assert torch.allclose(eps[layer], -deltas[layer], rtol=0, atol=1e-14)
        net.inference_step(state, eps, rate=1.0)


# --- the conditions -----------------------------------------------------------------------
def test_inference_rate_below_one_scales_layer_l_by_rate_to_the_l(fmnist):
    """Rate 0.99: the layer d steps from the output gets 0.99^d times the true gradient,
    a visible gap; only the output layer (learning at step 0, before any inference) is exact."""
    images, targets = fmnist
    model = make_cnn()
    bp = backprop_gradients(model, images, targets)
    off = zil_gradients(model, images, targets, inference_rate=0.99)
    exact = zil_gradients(model, images, targets)
    weight_layers = ["0.", "2.", "4.0.", "6.", "8."]  # Conv, Conv, Conv, Linear, Linear
    for d, prefix in enumerate(reversed(weight_layers)):
        for name in bp:
            if name.startswith(prefix):
                top = float(bp[name].abs().max())
                assert float((off[name] - 0.99**d * bp[name]).abs().max()) < 1e-13 * top
                gap = float((off[name] - bp[name]).abs().max()) / top
                if d == 0:
                    assert gap < 1e-13
                else:
                    assert gap > 0.009 * d  # 1 - 0.99^d
    assert max_gap(off, bp) > 1e6 * max_gap(exact, bp)


@pytest.mark.parametrize("make", [make_mlp, make_cnn], ids=["mlp", "cnn"])
def test_update_at_the_wrong_step_is_not_backprop(make, fmnist):
    """Taking each layer's update one inference step late: every layer is off, far above round-off."""
    images, targets = fmnist
    model = make()
    bp = backprop_gradients(model, images, targets)
    late = zil_gradients(model, images, targets, step_offset=1)
    for name in bp:
        rel = float((late[name] - bp[name]).abs().max()) / float(bp[name].abs().max())
        assert rel > 0.01, name  # round-off would be ~1e-16


# --- bad input ----------------------------------------------------------------------------
def test_bad_models_and_inputs_are_refused(fmnist):
    images, targets = fmnist
    with pytest.raises(TypeError, match=r"nn\.Module"):
        zil_gradients(lambda t: t, images.flatten(1), targets)
    with pytest.raises(TypeError, match="BatchNorm1d"):
        zil_gradients(
            nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.BatchNorm1d(10)).double(), images, targets
        )
    with pytest.raises(ValueError, match="does not depend on any trainable parameter"):
        zil_gradients(nn.Sequential(nn.Flatten(), nn.Tanh()), images, images.flatten(1))
    with pytest.raises(ValueError, match="y has shape"):
        zil_gradients(make_mlp(), images, targets[:, :5])
    with pytest.raises(ValueError, match="inference_rate"):
        zil_gradients(make_mlp(), images, targets, inference_rate=0.0)
    with pytest.raises(ValueError, match="step_offset"):
        zil_gradients(make_mlp(), images, targets, step_offset=-1)
    with pytest.raises(TypeError, match="x must be a float"):
        zil_gradients(make_mlp(), images.long(), targets)
    with pytest.raises(TypeError, match=r"x has dtype torch.float32, the model's parameters torch.float64"):
        zil_gradients(make_mlp(), images.float(), targets)
    with pytest.raises(ValueError, match=r"the model does not run on x of shape \(16, 1, 28, 20\)"):
        zil_gradients(make_mlp(), images[..., :20], targets)
    reflect = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten()).double()
    with pytest.raises(ValueError, match="padding_mode"):
        zil_gradients(reflect, images, torch.zeros(16, 2 * 28 * 28, dtype=torch.float64))
    # A layer used twice is a shared weight now (memory_core.zil sums its two updates):
    # tests/numerics/test_zil_graph.py checks it against autograd.
