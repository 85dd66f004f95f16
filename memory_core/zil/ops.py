"""The operations of a Z-IL graph: each one's forward and its vector-Jacobian product.

An operation takes operands (tensors, or Python constants such as ``None`` for a missing
bias) and returns its output with a context, the tensors its VJP needs. ``vjp(g, ctx,
needs)`` returns, for each operand whose ``needs`` flag is set, g^T d out / d operand:
the error an operation sends back to a value node, or a parameter's weight update. No
autograd anywhere: matmuls, transposes, reshapes and scatters written out. Convolution
and average pooling call ATen's own backward kernels directly (``convolution_backward``,
``avg_pool2d_backward``), the kernels autograd would pick, without an autograd tape.

Operations marked ``vertex`` (the weight layers: Linear, Conv2d, RNN cells, matmul)
always own a value node; the others own one only where they join two or more value
nodes or parameters (see ``trace``), and are otherwise folded into the prediction of the
value node that consumes them, as in mu = W f(x).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import activation_vjp

Grads = list[Tensor | None]


class UnsupportedOperation(TypeError):
    """The model uses an operation Z-IL has no VJP for; the message names it."""


class Op:
    """One operation. Subclasses define ``forward`` and ``vjp``; ``label`` names it in errors."""

    label = "op"
    vertex = False  # True: always its own value node (a weight layer)

    def forward(self, *operands: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.label


def _sum_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting: sum g down to ``shape``."""
    return g if g.shape == shape else g.sum_to_size(shape)


# --- weight layers -----------------------------------------------------------------------
class Linear(Op):
    """out = x W^T + b; operands (x, W, b or None); x (..., in), W (out, in)."""

    label, vertex = "linear", True

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None) -> tuple[Tensor, Any]:
        return F.linear(x, w, b), (x, w)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        x, w = ctx
        g2 = g.reshape(-1, g.shape[-1])  # (N, out), every leading dim a sample
        return [
            g @ w if needs[0] else None,  # (..., in)
            g2.T @ x.reshape(-1, x.shape[-1]) if needs[1] else None,  # (out, in)
            g2.sum(0) if needs[2] else None,  # (out,)
        ]


class Conv2d(Op):
    """out = conv2d(x, W, b); operands (x, W, b or None), zero padding given as numbers."""

    label, vertex = "conv2d", True

    def __init__(self, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> None:
        self.stride, self.padding, self.dilation, self.groups = (
            list(stride),
            list(padding),
            list(dilation),
            groups,
        )

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None) -> tuple[Tensor, Any]:
        out = F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return out, (x, w, b is not None)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        x, w, has_bias = ctx
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, x, w, [w.shape[0]] if has_bias else None, self.stride, self.padding, self.dilation,
            False, [0, 0], self.groups, [bool(needs[0]), bool(needs[1]), bool(needs[2]) and has_bias],
        )  # fmt: skip
        return [gx, gw, gb]


class RNNCell(Op):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh); operands (x, h or None, W_ih, W_hh, b_ih, b_hh)."""

    label, vertex = "rnn_cell", True

    def __init__(self, nonlinearity: str) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def forward(self, x, h, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Any]:
        pre = F.linear(x, w_ih, b_ih)  # (B, H)
        if h is not None:
            pre = pre + F.linear(h, w_hh, b_hh)
        elif b_hh is not None:
            pre = pre + b_hh
        out = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return out, (x, h, w_ih, w_hh, out)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        x, h, w_ih, w_hh, out = ctx
        # (B, H), the error at the pre-activation: g (1 - out^2) for tanh, g [out > 0] = g sign(out) for ReLU
        d = torch.addcmul(g, g * out, out, value=-1) if self.nonlinearity == "tanh" else g * torch.sign(out)
        db = d.sum(0) if needs[4] or needs[5] else None
        return [
            d @ w_ih if needs[0] else None,
            d @ w_hh if needs[1] and h is not None else None,
            d.T @ x if needs[2] else None,
            d.T @ h if needs[3] and h is not None else None,  # no h (zero state): W_hh not used
            db if needs[4] else None,
            db if needs[5] else None,  # the same tensor: the accumulator never adds in place
        ]


class MatMul(Op):
    """out = a @ b for a, b of at least 2 dimensions (batch dimensions broadcast)."""

    label, vertex = "matmul", True

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Any]:
        if a.dim() < 2 or b.dim() < 2:
            raise UnsupportedOperation("matmul of a 1-D tensor is not supported by Z-IL (unsqueeze it first)")
        return a @ b, (a, b)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        a, b = ctx
        return [
            _sum_to(g @ b.mT, a.shape) if needs[0] else None,
            _sum_to(a.mT @ g, b.shape) if needs[1] else None,
        ]


# --- elementwise arithmetic (operands may be Python numbers) ----------------------------
def _shape(t: Any) -> torch.Size | None:
    return t.shape if isinstance(t, Tensor) else None


class Add(Op):
    """out = a + alpha b (torch.add's broadcasting)."""

    label = "add"

    def __init__(self, alpha: float = 1) -> None:
        self.alpha = alpha

    def forward(self, a, b) -> tuple[Tensor, Any]:
        out = torch.add(a, b, alpha=self.alpha) if self.alpha != 1 else a + b
        return out, (_shape(a), _shape(b))

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        sa, sb = ctx
        return [
            _sum_to(g, sa) if needs[0] else None,
            _sum_to(g if self.alpha == 1 else self.alpha * g, sb) if needs[1] else None,
        ]


class Sub(Add):
    """out = a - alpha b."""

    label = "sub"

    def __init__(self, alpha: float = 1) -> None:
        super().__init__(-alpha)


class Mul(Op):
    """out = a * b, elementwise."""

    label = "mul"

    def forward(self, a, b) -> tuple[Tensor, Any]:
        return a * b, (a, b)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        a, b = ctx
        return [_sum_to(g * b, a.shape) if needs[0] else None, _sum_to(g * a, b.shape) if needs[1] else None]


class Div(Op):
    """out = a / b, elementwise (true division)."""

    label = "div"

    def forward(self, a, b) -> tuple[Tensor, Any]:
        return a / b, (a, b)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        a, b = ctx
        return [
            _sum_to(g / b, a.shape) if needs[0] else None,
            _sum_to(-g * a / (b * b), b.shape) if needs[1] else None,
        ]


class Neg(Op):
    label = "neg"

    def forward(self, a: Tensor) -> tuple[Tensor, Any]:
        return -a, None

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        return [-g]


class Activation(Op):
    """out = f(x) for an elementwise activation module f."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.label = module, type(module).__name__

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        y = self.module(x)
        return y, (x, y)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        x, y = ctx
        return [activation_vjp(self.module, g, x, y)]


# --- structure: copies, shapes, joins, selections ---------------------------------------
class Identity(Op):
    """out = x: the value nodes inserted to level a graph (every path to the output equally long)."""

    label = "identity"

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        return x, None

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        return [g]


class Reshape(Op):
    """Any view that keeps the elements in order (view, reshape, flatten, (un)squeeze, ...)."""

    def __init__(self, fn: Callable[..., Tensor], label: str) -> None:
        self.fn, self.label = fn, label

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        return self.fn(x), x.shape

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        return [g.reshape(ctx)]


class Permute(Op):
    """out = x.permute(dims); ``swap=(d0, d1)`` instead: x.transpose(d0, d1) (and .t());
    neither: every dimension reversed (x.T)."""

    label = "permute"

    def __init__(self, dims: Sequence[int] | None = None, swap: tuple[int, int] | None = None) -> None:
        self.dims, self.swap = None if dims is None else list(dims), swap

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        if self.swap is None and self.dims is None:
            dims = list(range(x.dim() - 1, -1, -1))
        elif self.swap is not None:
            dims = list(range(x.dim()))
            a, b = (d % x.dim() for d in self.swap)
            dims[a], dims[b] = dims[b], dims[a]
        else:
            dims = [d % x.dim() for d in self.dims]
        return x.permute(dims), dims

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        inverse = [0] * len(ctx)
        for i, d in enumerate(ctx):
            inverse[d] = i
        return [g.permute(inverse)]


class GetItem(Op):
    """out = x[index] for basic indexing (ints, slices, None, Ellipsis)."""

    label = "getitem"

    def __init__(self, index: Any) -> None:
        parts = index if isinstance(index, tuple) else (index,)
        if not all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts):
            raise UnsupportedOperation(
                f"indexing with {index!r} is not supported by Z-IL on a value node: only ints, slices, None and ..."
            )
        self.index = index

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        return x[self.index], x

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        out = ctx.new_zeros(ctx.shape)
        out[self.index] = g
        return [out]


class Cat(Op):
    """out = torch.cat(operands, dim)."""

    label = "cat"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def forward(self, *xs: Tensor) -> tuple[Tensor, Any]:
        return torch.cat(xs, self.dim), [x.shape[self.dim] for x in xs]

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        return list(torch.split(g, ctx, self.dim))


class Stack(Op):
    """out = torch.stack(operands, dim)."""

    label = "stack"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def forward(self, *xs: Tensor) -> tuple[Tensor, Any]:
        return torch.stack(xs, self.dim), None

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        return list(torch.unbind(g, self.dim))


class Reduce(Op):
    """out = x.sum(dim) or x.mean(dim) (dim None: every dimension)."""

    def __init__(self, kind: str, dim: int | Sequence[int] | None, keepdim: bool) -> None:
        self.kind, self.label = kind, kind
        self.dim = None if dim is None else ([dim] if isinstance(dim, int) else list(dim))
        self.keepdim = keepdim

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        dims = list(range(x.dim())) if self.dim is None else [d % x.dim() for d in self.dim]
        out = x.sum(dims, keepdim=self.keepdim) if self.kind == "sum" else x.mean(dims, keepdim=self.keepdim)
        return out, (x.shape, dims)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        shape, dims = ctx
        if not self.keepdim:
            for d in sorted(dims):
                g = g.unsqueeze(d)
        g = g.expand(shape)
        if self.kind == "mean":
            g = g / torch.Size([shape[d] for d in dims]).numel()
        return [g]


def _pair(v: int | Sequence[int]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class MaxPool2d(Op):
    """Max pooling; the VJP sends each error to the input that won its window (a scatter-add)."""

    label = "max_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> None:
        self.kernel, self.stride = _pair(kernel_size), _pair(stride if stride else kernel_size)
        self.padding, self.dilation, self.ceil_mode = _pair(padding), _pair(dilation), ceil_mode

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        out, idx = F.max_pool2d(
            x, self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode, return_indices=True
        )
        return out, (x.shape, idx)

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        shape, idx = ctx  # idx: (B, C, Ho, Wo), positions in the flattened (H * W) input plane
        out = g.new_zeros(*shape[:-2], shape[-2] * shape[-1])
        out.scatter_add_(-1, idx.flatten(-2), g.flatten(-2))  # windows may overlap: add
        return [out.reshape(shape)]


class AvgPool2d(Op):
    """Average pooling; its VJP is ATen's ``avg_pool2d_backward`` kernel."""

    label = "avg_pool2d"

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ) -> None:
        self.kernel, self.stride = _pair(kernel_size), _pair(stride if stride else kernel_size)
        self.padding, self.ceil_mode = _pair(padding), ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        out = F.avg_pool2d(
            x,
            self.kernel,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )
        return out, x

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        return [
            torch.ops.aten.avg_pool2d_backward(
                g, ctx, self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override,
            )
        ]  # fmt: skip


class AdaptiveAvgPool2d(Op):
    """Adaptive average pooling to ``output_size``; VJP: ATen's ``_adaptive_avg_pool2d_backward``."""

    label = "adaptive_avg_pool2d"

    def __init__(self, output_size) -> None:
        self.output_size = output_size

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        return F.adaptive_avg_pool2d(x, self.output_size), x

    def vjp(self, g: Tensor, ctx: Any, needs: Sequence[bool]) -> Grads:
        return [torch.ops.aten._adaptive_avg_pool2d_backward(g, ctx)]
