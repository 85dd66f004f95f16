"""Elementwise activations Z-IL supports, with their derivatives written by hand.

An activation is recognised in three spellings: a module (``nn.Tanh()``), a function
(``torch.tanh``, ``F.leaky_relu(x, 0.1)``) and a tensor method (``x.tanh()``). The
function and method spellings are turned into the equivalent module, so that one table,
``ACTIVATION_DERIVATIVES``, gives every derivative. Where f' is cheaper from the output
y = f(x) than from the input (tanh, sigmoid, ReLU), ``activation_vjp`` uses y.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATION_DERIVATIVES",
    "activation_from_function",
    "activation_from_method",
    "activation_vjp",
    "is_activation",
    "non_inplace",
]


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

# g * f'(x) from y = f(x) where that saves recomputing f: (module, g, y) -> g * f'.
_VJP_FROM_OUTPUT: dict[type[nn.Module], Callable[[nn.Module, Tensor, Tensor], Tensor]] = {
    nn.Tanh: lambda m, g, y: g * (1 - y * y),
    nn.Sigmoid: lambda m, g, y: g * (y * (1 - y)),
    nn.ReLU: lambda m, g, y: g * torch.sign(y),  # y >= 0, so sign(y) is 1 where x > 0, else 0
}


def _lookup(table: dict, module: nn.Module) -> Callable | None:
    for kind in type(module).__mro__:
        if kind in table:
            return table[kind]
    return None


def is_activation(module: nn.Module) -> bool:
    """True for a module whose derivative Z-IL knows (an elementwise activation)."""
    return _lookup(ACTIVATION_DERIVATIVES, module) is not None


def activation_vjp(module: nn.Module, g: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """g * f'(x), elementwise, for the activation ``module`` with input x and output y = f(x)."""
    from_output = _lookup(_VJP_FROM_OUTPUT, module)
    if from_output is not None:
        return from_output(module, g, y)
    return g * _lookup(ACTIVATION_DERIVATIVES, module)(module, x)


def non_inplace(module: nn.Module) -> nn.Module:
    """The module itself, or a copy with ``inplace=False``: a value node must never be overwritten."""
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False
    return module


# The function spellings: function -> (its arguments after the input -> module).
_FUNCTIONS: dict[Callable, Callable[..., nn.Module]] = {
    torch.relu: lambda: nn.ReLU(),
    F.relu: lambda inplace=False: nn.ReLU(),
    torch.tanh: lambda: nn.Tanh(),
    F.tanh: lambda: nn.Tanh(),
    torch.sigmoid: lambda: nn.Sigmoid(),
    F.sigmoid: lambda: nn.Sigmoid(),
    F.leaky_relu: lambda negative_slope=0.01, inplace=False: nn.LeakyReLU(negative_slope),
    F.elu: lambda alpha=1.0, inplace=False: nn.ELU(alpha),
    F.gelu: lambda approximate="none": nn.GELU(approximate),
    F.silu: lambda inplace=False: nn.SiLU(),
    F.softplus: lambda beta=1.0, threshold=20.0: nn.Softplus(beta, threshold),
    F.hardtanh: lambda min_val=-1.0, max_val=1.0, inplace=False: nn.Hardtanh(min_val, max_val),
    F.relu6: lambda inplace=False: nn.ReLU6(),
}
_METHODS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation_from_function(fn: Callable, args: tuple, kwargs: dict) -> nn.Module | None:
    """The module equivalent of ``fn(input, *args, **kwargs)``, or None if fn is no activation."""
    make = _FUNCTIONS.get(fn)
    return None if make is None else make(*args, **kwargs)


def activation_from_method(name: str) -> nn.Module | None:
    """The module equivalent of the tensor method ``x.<name>()``, or None."""
    make = _METHODS.get(name)
    return None if make is None else make()
