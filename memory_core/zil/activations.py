"""Z-IL: inference learning that computes backprop's gradients exactly.

Song et al. 2020 ("Can the brain do backpropagation? Exact implementation of
backpropagation in predictive coding networks") and Salvatori et al. 2021 ("Reverse
differentiation via predictive coding") show that a predictive-coding network run under
three conditions yields exactly the gradients of backpropagation:

1. zero initial errors: the value nodes start at the feed-forward pass, x_l = mu_l;
2. inference rate 1: x_l <- x_l + 1 * (-eps_l + J_{l+1}^T eps_{l+1});
3. the weight update of the layer l steps away from the output is taken at inference step l.

The network here is built from a feed-forward ``nn.Sequential`` of Linear / Conv2d layers,
elementwise activations and Flatten. Each Linear or Conv2d layer owns one value node (its
output); the parameter-free modules in front of it form its input function f, so that

    mu_l = W_l f_l(x_{l-1}) + b_l,    eps_l = x_l - mu_l,    E = 1/2 sum_l |eps_l|^2

with x_0 = the input (clamped) and x_L = the target (clamped). Modules after the last
Linear / Conv2d form a parameter-free output layer mu_L = f_L(x_{L-1}).

Everything below is local and hand-written: predictions, errors, the feedback J^T eps
(W^T eps for Linear; the transposed convolution ``conv2d_input`` for Conv2d; f' times the
error for activations) and the weight updates eps_l f_l(x_{l-1})^T (``conv2d_weight`` for
Conv2d). Autograd is never called (the whole procedure runs under ``torch.no_grad``); the
tests compare the result with autograd's.

At step 0 only the output error is non-zero. An error moves one layer down per inference
step, and with rate 1 the error that arrives at layer l at step l is exactly the vector-
Jacobian product backprop computes, while the layer's input x_{l-1} has not moved yet. A
rate below 1 scales it down (by rate^l), and at any other step either the error has not
arrived or the layer's input and own value have moved on: the ``inference_rate`` and
``step_offset`` arguments exist to show this.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input, conv2d_weight

__all__ = ["ACTIVATION_DERIVATIVES", "ZILNetwork", "zil_gradients"]


# --- elementwise activations and their derivatives (by hand, no autograd) -----------------
def _gelu_prime(m: nn.GELU, x: Tensor) -> Tensor:
    if m.approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        inner = c * (x + 0.044715 * x**3)
        t = torch.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def _softplus_prime(m: nn.Softplus, x: Tensor) -> Tensor:
    # Softplus is linear above the threshold (as torch computes it), sigmoid(beta x) below.
    return torch.where(x * m.beta > m.threshold, torch.ones_like(x), torch.sigmoid(m.beta * x))


def _silu_prime(m: nn.SiLU, x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


ACTIVATION_DERIVATIVES: dict[type[nn.Module], Callable[[nn.Module, Tensor], Tensor]] = {
    nn.Identity: lambda m, x: torch.ones_like(x),
    nn.Tanh: lambda m, x: 1 - torch.tanh(x) ** 2,
    nn.Sigmoid: lambda m, x: torch.sigmoid(x) * (1 - torch.sigmoid(x)),
    nn.ReLU: lambda m, x: (x > 0).to(x.dtype),
    nn.LeakyReLU: lambda m, x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, m.negative_slope)),
    nn.ELU: lambda m, x: torch.where(x > 0, torch.ones_like(x), m.alpha * torch.exp(x)),
    nn.Hardtanh: lambda m, x: ((x > m.min_val) & (x < m.max_val)).to(x.dtype),  # ReLU6 too
    nn.Softplus: _softplus_prime,
    nn.SiLU: _silu_prime,
    nn.GELU: _gelu_prime,
}
"""f'(x) for each supported elementwise activation, given the module and its input."""


def _derivative(module: nn.Module) -> Callable[[nn.Module, Tensor], Tensor] | None:
    for kind in type(module).__mro__:
        if kind in ACTIVATION_DERIVATIVES:
            return ACTIVATION_DERIVATIVES[kind]
    return None


# --- the network of value nodes ----------------------------------------------------------
@dataclass
class _Layer:
    """One value node: mu = op(f(x_prev)), f = the parameter-free modules ``pre``."""

    pre: list[nn.Module] = field(default_factory=list)
    op: nn.Linear | nn.Conv2d | None = None  # None: the parameter-free output layer
    name: str = ""  # prefix of op's parameter names in the model ("3." for model[3])

    def input_fn(self, x_prev: Tensor) -> tuple[Tensor, list[Tensor]]:
        """f(x_prev) and the input of every module of f (kept for the feedback pass)."""
        inputs = []
        h = x_prev
        for m in self.pre:
            inputs.append(h)
            h = m(h)
        return h, inputs

    def predict(self, fx: Tensor) -> Tensor:
        """mu = op(f(x_prev)) from f(x_prev)."""
        if self.op is None:
            return fx
        if isinstance(self.op, nn.Linear):
            return F.linear(fx, self.op.weight, self.op.bias)
        return self.op(fx)

    def feedback(self, eps: Tensor, fx: Tensor, inputs: list[Tensor]) -> Tensor:
        """d mu / d x_prev transposed, applied to eps: the error signal for the layer below."""
        g = eps
        if isinstance(self.op, nn.Linear):
            g = g @ self.op.weight  # (B, out) -> (B, in): W^T eps
        elif isinstance(self.op, nn.Conv2d):
            c = self.op
            g = conv2d_input(fx.shape, c.weight, g, c.stride, _padding(c), c.dilation, c.groups)
        for m, h in zip(reversed(self.pre), reversed(inputs)):
            if isinstance(m, nn.Flatten):
                g = g.reshape(h.shape)
            else:
                g = g * _derivative(m)(m, h)  # f'(h) * error, elementwise
        return g

    def weight_grads(self, eps: Tensor, fx: Tensor) -> dict[str, Tensor]:
        """dE/dW = -eps f(x_prev)^T (and dE/db = -sum eps), summed over the batch."""
        if self.op is None:
            return {}
        out: dict[str, Tensor] = {}
        if isinstance(self.op, nn.Linear):
            out["weight"] = -eps.reshape(-1, eps.shape[-1]).T @ fx.reshape(-1, fx.shape[-1])  # (out, in)
            if self.op.bias is not None:
                out["bias"] = -eps.reshape(-1, eps.shape[-1]).sum(0)
        else:
            c = self.op
            out["weight"] = -conv2d_weight(fx, c.weight.shape, eps, c.stride, _padding(c), c.dilation, c.groups)
            if c.bias is not None:
                out["bias"] = -eps.sum(dim=(0, 2, 3))
        return {self.name + k: v for k, v in out.items()}


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Conv2d's padding as numbers ('same' / 'valid' resolved), for the backward kernels."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):
            raise ValueError("Conv2d padding='same' with an even receptive field is not supported")
        return (total[0] // 2, total[1] // 2)
    return tuple(conv.padding)


def _split_layers(model: nn.Sequential) -> list[_Layer]:
    """Group the (flattened) modules of a Sequential into value-node layers."""
    mods: list[tuple[str, nn.Module]] = []

    def walk(seq: nn.Sequential, prefix: str) -> None:
        for name, m in seq._modules.items():  # not named_children(): it hides a repeated module
            if isinstance(m, nn.Sequential):
                walk(m, f"{prefix}{name}.")
            else:
                mods.append((f"{prefix}{name}.", m))

    walk(model, "")
    seen: set[int] = set()
    layers, pending = [], []
    for name, m in mods:
        if id(m) in seen and any(True for _ in m.parameters()):
            raise ValueError(f"module {name[:-1]!r} is used twice: shared layers are not supported")
        seen.add(id(m))
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                raise ValueError(f"Conv2d {name[:-1]!r}: only padding_mode='zeros' is supported")
            layers.append(_Layer(pending, m, name))
            pending = []
        elif isinstance(m, nn.Flatten) or _derivative(m) is not None:
            pending.append(m)
        else:
            supported = ", ".join(sorted(k.__name__ for k in ACTIVATION_DERIVATIVES))
            raise TypeError(
                f"module {name[:-1]!r} ({type(m).__name__}) is not supported: use Linear, Conv2d, "
                f"Flatten and elementwise activations ({supported})"
            )
    if not layers:
        raise ValueError("the model has no Linear or Conv2d layer: nothing to learn")
    if pending:
        layers.append(_Layer(pending, None, ""))  # activations after the last weight layer
    return layers


class ZILNetwork:
    """A predictive-coding network with one value node per Linear / Conv2d layer of a model.

    It shares the model's parameters (no copy). ``values[l]`` is x_l: values[0] is the
    input, values[-1] the output node.

    Arguments:
        model: a feed-forward ``nn.Sequential`` of Linear, Conv2d, Flatten and elementwise
            activations (nested Sequentials are flattened).
    """

    def __init__(self, model: nn.Sequential) -> None:
        if not isinstance(model, nn.Sequential):
            raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
        self.model = model
        self.layers = _split_layers(model)

    def __len__(self) -> int:
        return len(self.layers)

    def feedforward(self, x: Tensor) -> list[Tensor]:
        """Values at the feed-forward pass: [x_0 = x, x_1, ..., x_L = model(x)] (all errors 0)."""
        values = [x]
        for layer in self.layers:
            values.append(layer.predict(layer.input_fn(values[-1])[0]))
        return values

    def errors(self, values: list[Tensor]) -> tuple[list[Tensor], list[tuple[Tensor, list[Tensor]]]]:
        """eps_l = x_l - mu_l for l = 1..L, and each layer's (f(x_{l-1}), inputs of f)."""
        eps, cache = [], []
        for layer, x_prev, x in zip(self.layers, values[:-1], values[1:]):
            fx, inputs = layer.input_fn(x_prev)
            eps.append(x - layer.predict(fx))
            cache.append((fx, inputs))
        return eps, cache

    def inference_step(
        self, values: list[Tensor], eps: list[Tensor], cache: list[tuple[Tensor, list[Tensor]]], rate: float
    ) -> list[Tensor]:
        """One gradient step on E for the free nodes x_1..x_{L-1}: x_l += rate (-eps_l + J^T eps_{l+1})."""
        new = [values[0]]
        for i in range(1, len(values) - 1):  # values[i] is predicted by layers[i - 1]
            fx, inputs = cache[i]
            new.append(values[i] + rate * (-eps[i - 1] + self.layers[i].feedback(eps[i], fx, inputs)))
        new.append(values[-1])
        return new

    @staticmethod
    def energy(eps: list[Tensor]) -> Tensor:
        """E = 1/2 sum_l |eps_l|^2, summed over the batch (a scalar)."""
        return 0.5 * sum((e**2).sum() for e in eps)


def zil_gradients(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    *,
    inference_rate: float = 1.0,
    step_offset: int = 0,
) -> dict[str, Tensor]:
    """Gradients of 0.5 * sum((model(x) - y)^2) by zero-divergence inference learning.

    With the defaults this is Z-IL and equals autograd's gradients up to round-off. The
    two knobs break one of its conditions each, to show that they are what makes it exact.

    Arguments:
        model: an ``nn.Sequential`` of Linear, Conv2d, Flatten and elementwise activations.
        x: (B, ...) inputs, as the model takes them.
        y: targets, the shape of ``model(x)``.
        inference_rate: the inference rate gamma (Z-IL: 1).
        step_offset: take the weight update of the layer l steps from the output at
            inference step l + step_offset (Z-IL: 0).

    Returns:
        {parameter name: dE/dparameter}, the model's ``named_parameters`` names and shapes,
        summed over the batch (the sign of a gradient: the PC weight change is its negative).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError("x must be a float tensor")
    if not isinstance(y, Tensor) or not y.is_floating_point():
        raise TypeError("y must be a float tensor")
    if not inference_rate > 0:
        raise ValueError(f"inference_rate must be > 0, got {inference_rate}")
    if step_offset < 0:
        raise ValueError(f"step_offset must be >= 0, got {step_offset}")
    net = ZILNetwork(model)
    depth = len(net)
    with torch.no_grad():
        values = net.feedforward(x)  # condition 1: every error starts at 0
        if values[-1].shape != y.shape:
            raise ValueError(f"y has shape {tuple(y.shape)}, the model's output has {tuple(values[-1].shape)}")
        values[-1] = y.to(values[-1].dtype)  # clamp the output node to the target
        grads: dict[str, Tensor] = {}
        last_step = depth - 1 + step_offset
        for step in range(last_step + 1):
            eps, cache = net.errors(values)
            # condition 3: layer l (counted from the output, output = 0) learns at step l.
            idx = depth - 1 - (step - step_offset)  # index into net.layers
            if 0 <= idx < depth:
                grads.update(net.layers[idx].weight_grads(eps[idx], cache[idx][0]))
            if step < last_step:
                values = net.inference_step(values, eps, cache, inference_rate)  # condition 2
    return {name: grads[name] for name, _ in model.named_parameters()}
