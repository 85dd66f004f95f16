"""From a traced call (a module, a function or a tensor method) to a Z-IL operation.

``bind_module``, ``bind_function`` and ``bind_method`` take the call's arguments as
given in the torch.fx graph and return a ``Bound``: the operation and its operands, in the
order the operation's ``forward`` takes them. Anything not listed here raises
``UnsupportedOperation`` naming the call (nn.RNN is unrolled by ``trace`` itself).
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .activations import activation_from_function, activation_from_method, is_activation, non_inplace
from .ops import UnsupportedOperation

__all__ = ["SUPPORTED", "Bound", "bind_function", "bind_method", "bind_module", "conv_padding"]

SUPPORTED = (
    "Linear, Conv2d (zero padding), RNNCell, RNN (tanh/relu, unidirectional), matmul, "
    "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten/Unflatten/view/reshape/(un)squeeze, "
    "transpose/permute/.T, indexing with ints and slices, cat, stack, sum, mean, "
    "+ - * / and negation, Identity, Dropout (eval or p=0), and the elementwise activations "
    "Tanh, Sigmoid, ReLU, ReLU6, LeakyReLU, ELU, Hardtanh, Softplus, SiLU, GELU"
)
"""What Z-IL can learn through, for error messages and the docs."""


@dataclass
class Bound:
    """An operation and its operands; ``op`` None means the call returns its first operand unchanged."""

    op: ops.Op | None
    operands: list[Any]


def conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Conv2d's padding as numbers ('same' / 'valid' resolved), for the backward kernel."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):
            raise ValueError("Conv2d padding='same' with an even receptive field is not supported")
        return (total[0] // 2, total[1] // 2)
    return tuple(conv.padding)


def _unsupported(what: str) -> UnsupportedOperation:
    return UnsupportedOperation(f"{what} is not supported by Z-IL. Supported: {SUPPORTED}")


def bind_module(
    module: nn.Module, name: str, args: tuple, kwargs: dict, param: Callable[[Any], Any]
) -> Bound:
    """A leaf module call ``module(*args, **kwargs)``; ``param`` turns a module's tensor into an operand."""
    what = f"module {name!r} ({type(module).__name__})"
    if isinstance(module, nn.Linear):
        return Bound(ops.Linear(), [args[0], param(module.weight), param(module.bias)])
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"Conv2d {name!r}: only padding_mode='zeros' is supported")
        op = ops.Conv2d(module.stride, conv_padding(module), module.dilation, module.groups)
        return Bound(op, [args[0], param(module.weight), param(module.bias)])
    if isinstance(module, nn.RNNCell):
        h = args[1] if len(args) > 1 else kwargs.get("hx")
        weights = [module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh]
        return Bound(ops.RNNCell(module.nonlinearity), [args[0], h, *map(param, weights)])
    if is_activation(module):
        return Bound(ops.Activation(non_inplace(module)), [args[0]])
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return Bound(ops.Reshape(module, type(module).__name__), [args[0]])
    if isinstance(module, nn.Dropout) and (module.p == 0 or not module.training):
        return Bound(None, [args[0]])
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise _unsupported(f"{what} with return_indices=True")
        m = module
        return Bound(ops.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode), [args[0]])
    if isinstance(module, nn.AvgPool2d):
        m = module
        op = ops.AvgPool2d(
            m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
        )
        return Bound(op, [args[0]])
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return Bound(ops.AdaptiveAvgPool2d(module.output_size), [args[0]])
    if isinstance(module, nn.Dropout):
        raise _unsupported(f"{what} in training mode (it is random; call model.eval() or use p=0)")
    raise _unsupported(what)


def _max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    if return_indices:
        raise _unsupported("F.max_pool2d with return_indices=True")
    return Bound(ops.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode), [input])


def _avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    return Bound(
        ops.AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override), [input]
    )


def _conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        raise _unsupported("F.conv2d with a string padding (give numbers)")
    pair = ops._pair
    return Bound(ops.Conv2d(pair(stride), pair(padding), pair(dilation), groups), [input, weight, bias])


def _dropout(input, p=0.5, training=True, inplace=False):
    if p and training:
        raise _unsupported("F.dropout in training mode (it is random)")
    return Bound(None, [input])


def _div(a, b, *, rounding_mode=None):
    if rounding_mode is not None:
        raise _unsupported(f"division with rounding_mode={rounding_mode!r}")
    return Bound(ops.Div(), [a, b])


def _reshape(label: str, fn: Callable) -> Callable[..., Bound]:
    return lambda x, *args, **kwargs: Bound(ops.Reshape(lambda t: fn(t, *args, **kwargs), label), [x])


def _transpose(x, dim0, dim1):
    return Bound(ops.Permute(swap=(dim0, dim1)), [x])


def _permute(x, *dims):
    return Bound(ops.Permute(dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims), [x])


def _getattr(x, name: str) -> Bound:
    if name == "T":
        return Bound(ops.Permute(), [x])
    if name == "mT":
        return Bound(ops.Permute(swap=(-2, -1)), [x])
    raise _unsupported(f"attribute .{name}")


def _reduce(kind: str) -> Callable[..., Bound]:
    def bind(x, dim=None, keepdim=False, *, dtype=None):
        if dtype is not None:
            raise _unsupported(f"{kind} with dtype=")
        return Bound(ops.Reduce(kind, dim, keepdim), [x])

    return bind


_FUNCTIONS: dict[Callable, Callable[..., Bound]] = {
    operator.add: lambda a, b: Bound(ops.Add(), [a, b]),
    torch.add: lambda input, other, *, alpha=1: Bound(ops.Add(alpha), [input, other]),
    operator.sub: lambda a, b: Bound(ops.Sub(), [a, b]),
    torch.sub: lambda input, other, *, alpha=1: Bound(ops.Sub(alpha), [input, other]),
    operator.mul: lambda a, b: Bound(ops.Mul(), [a, b]),
    torch.mul: lambda input, other: Bound(ops.Mul(), [input, other]),
    operator.truediv: lambda a, b: Bound(ops.Div(), [a, b]),
    torch.div: _div,
    operator.neg: lambda a: Bound(ops.Neg(), [a]),
    torch.neg: lambda a: Bound(ops.Neg(), [a]),
    operator.matmul: lambda a, b: Bound(ops.MatMul(), [a, b]),
    torch.matmul: lambda input, other: Bound(ops.MatMul(), [input, other]),
    torch.mm: lambda input, mat2: Bound(ops.MatMul(), [input, mat2]),
    torch.bmm: lambda input, mat2: Bound(ops.MatMul(), [input, mat2]),
    F.linear: lambda input, weight, bias=None: Bound(ops.Linear(), [input, weight, bias]),
    F.conv2d: _conv2d,
    torch.conv2d: _conv2d,
    torch.cat: lambda tensors, dim=0: Bound(ops.Cat(dim), list(tensors)),
    torch.concat: lambda tensors, dim=0: Bound(ops.Cat(dim), list(tensors)),
    torch.stack: lambda tensors, dim=0: Bound(ops.Stack(dim), list(tensors)),
    operator.getitem: lambda x, index: Bound(ops.GetItem(index), [x]),
    builtins.getattr: _getattr,
    torch.flatten: _reshape("flatten", torch.flatten),
    torch.reshape: _reshape("reshape", torch.reshape),
    torch.squeeze: _reshape("squeeze", torch.squeeze),
    torch.unsqueeze: _reshape("unsqueeze", torch.unsqueeze),
    torch.transpose: _transpose,
    torch.permute: _permute,
    torch.t: lambda x: Bound(ops.Permute(swap=(0, 1)), [x]),
    torch.sum: _reduce("sum"),
    torch.mean: _reduce("mean"),
    F.max_pool2d: _max_pool2d,
    torch.max_pool2d: _max_pool2d,
    F.avg_pool2d: _avg_pool2d,
    F.adaptive_avg_pool2d: lambda input, output_size: Bound(ops.AdaptiveAvgPool2d(output_size), [input]),
    F.dropout: _dropout,
}

_METHODS: dict[str, Callable[..., Bound]] = {
    "add": lambda a, b, *, alpha=1: Bound(ops.Add(alpha), [a, b]),
    "sub": lambda a, b, *, alpha=1: Bound(ops.Sub(alpha), [a, b]),
    "mul": lambda a, b: Bound(ops.Mul(), [a, b]),
    "div": _div,
    "neg": lambda a: Bound(ops.Neg(), [a]),
    "matmul": lambda a, b: Bound(ops.MatMul(), [a, b]),
    "view": _reshape("view", torch.Tensor.view),
    "reshape": _reshape("reshape", torch.Tensor.reshape),
    "flatten": _reshape("flatten", torch.Tensor.flatten),
    "unflatten": _reshape("unflatten", torch.Tensor.unflatten),
    "squeeze": _reshape("squeeze", torch.Tensor.squeeze),
    "unsqueeze": _reshape("unsqueeze", torch.Tensor.unsqueeze),
    "contiguous": lambda x: Bound(None, [x]),
    "transpose": _transpose,
    "permute": _permute,
    "t": lambda x: Bound(ops.Permute(swap=(0, 1)), [x]),
    "sum": _reduce("sum"),
    "mean": _reduce("mean"),
}


def _name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None) or ""
    return f"{module}.{getattr(fn, '__name__', repr(fn))}".lstrip(".")


def bind_function(fn: Callable, args: tuple, kwargs: dict) -> Bound:
    """A call ``fn(*args, **kwargs)`` with at least one operand that is a value node or parameter."""
    activation = activation_from_function(fn, args[1:], kwargs)
    if activation is not None:
        return Bound(ops.Activation(activation), [args[0]])
    binder = _FUNCTIONS.get(fn)
    if binder is None:
        raise _unsupported(f"function {_name(fn)}")
    return binder(*args, **kwargs)


def bind_method(name: str, args: tuple, kwargs: dict) -> Bound:
    """A tensor method call ``args[0].<name>(*args[1:], **kwargs)``."""
    activation = activation_from_method(name)
    if activation is not None and len(args) == 1 and not kwargs:
        return Bound(ops.Activation(activation), [args[0]])
    binder = _METHODS.get(name)
    if binder is None:
        raise _unsupported(f"tensor method .{name}()")
    return binder(*args, **kwargs)
