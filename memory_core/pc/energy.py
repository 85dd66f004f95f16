"""The PC energy in one place: activations, predictions, errors, E and its gradient.

Layers run from the top latent x_0 to the sensory layer x_{L-1} (the pattern). Each layer
below the top is predicted from the one above:

    mu_l  = W_l f(x_{l-1}) + b_l,   eps_l = x_l - mu_l                      l = 1 .. L-1
    E     = sum_l pi_l / 2 ||eps_l||^2  (+ pi_0 / 2 ||x_0 - m||^2, the top prior)
    dE/dx_l = pi_l eps_l - f'(x_l) * pi_{l+1} eps_{l+1} W_{l+1}  (l = 0: the prior's pull)

``energy`` and ``gradient`` are what both relaxations (``relax.py``), ``PCMemory.energy``
and the weight step use. The activations write f and f' into preallocated buffers (the
hot loop allocates nothing per step); ``PCGraph`` uses the same ones through
``activation_pair``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..linalg import linear  # x @ w.T via oneDNN on the CPU

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "GramSensory",
    "Network",
    "activate",
    "activation_pair",
    "energy",
    "gradient",
    "has_prior",
    "predict",
    "prior_energy",
    "top_down",
]

Activation = Callable[[Tensor, Tensor, Tensor], None]
"""(x, f, df) -> None: writes f(x) into f and f'(x) into df (same shape as x)."""


# --- activations: f and f' written into preallocated buffers (f' <= 1 for every one) ---
def _tanh(x: Tensor, f: Tensor, df: Tensor) -> None:
    torch.tanh(x, out=f)
    torch.mul(f, f, out=df)
    df.neg_().add_(1.0)


def _sigmoid(x: Tensor, f: Tensor, df: Tensor) -> None:
    torch.sigmoid(x, out=f)
    torch.mul(f, f, out=df)
    df.neg_().add_(f)  # f (1 - f)


def _linear(x: Tensor, f: Tensor, df: Tensor) -> None:
    f.copy_(x)
    df.fill_(1.0)


def _relu(x: Tensor, f: Tensor, df: Tensor) -> None:
    torch.clamp(x, min=0.0, out=f)
    torch.gt(x, 0.0, out=df)  # writes 0/1 into the float buffer


def _hardtanh(x: Tensor, f: Tensor, df: Tensor) -> None:
    torch.clamp(x, -1.0, 1.0, out=f)
    torch.lt(x.abs(), 1.0, out=df)  # 1 strictly inside (-1, 1), else 0


ACTIVATIONS: dict[str, Activation] = {
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "linear": _linear,
    "relu": _relu,
    "hardtanh": _hardtanh,
}


def activation_pair(act: Activation, x: Tensor) -> tuple[Tensor, Tensor]:
    """(f(x), f'(x)) as new tensors shaped like x."""
    f, df = torch.empty_like(x), torch.empty_like(x)
    act(x, f, df)
    return f, df


def activate(act: Activation, x: Tensor) -> Tensor:
    """f(x) as a new tensor."""
    return activation_pair(act, x)[0]


# --- the network the energy reads ----------------------------------------------------------
@dataclass
class Network:
    """The parameters E reads, and how the bottom-up messages read them.

    Attributes:
        weights: W_1 .. W_{L-1}, W_l (n_l, n_{l-1}).
        biases: b_1 .. b_{L-1}, b_l (n_l,).
        prior_mean: m (n_0,), the top prior's mean.
        act: f between layers.
        transposed: W_l^T (n_{l-1}, n_l) for each layer: contiguous copies for oneDNN's
            linear (which reads the rows of its right factor), views for torch's matmul.
    """

    weights: list[Tensor]
    biases: list[Tensor]
    prior_mean: Tensor
    act: Activation
    transposed: list[Tensor]


@dataclass
class GramSensory:
    """A clamped sensory layer whose message comes from the Gram matrix (all entries known).

    pi eps_x W_x = pi ((x - b) W - f G) and ||eps_x||^2 = ||x - b||^2 - f.u - f.(u - f G),
    so a step costs a (B, H) x (H, H) product instead of two (B, H) x (H, D) ones.

    Attributes:
        u: (B, H) (x - b) W_x.
        gram: (H, H) W_x^T W_x, exactly symmetric.
        constant: (B,) pi_{L-1} / 2 ||x - b||^2, the sensory energy at f = 0.
    """

    u: Tensor
    gram: Tensor
    constant: Tensor


def has_prior(pi0: float | Tensor) -> bool:
    """Whether the top latent has a prior term: pi_0 > 0, or per-cue precisions (a Tensor)."""
    return isinstance(pi0, Tensor) or pi0 > 0


def prior_energy(x0: Tensor, mean: Tensor, pi0: float | Tensor) -> Tensor:
    """(B,) pi_0 / 2 ||x_0 - m||^2, pi_0 a float or per cue (B, 1)."""
    return (x0 - mean).square_().mul_(pi0).sum(1).mul_(0.5)


def top_down(net: Network, batch: int) -> list[Tensor]:
    """The relaxations' start: x_0 = m, x_l = mu_l for the hidden layers; [(B, n_l)]."""
    xs = [net.prior_mean.expand(batch, -1).clone()]
    for l in range(1, len(net.weights)):
        xs.append(linear(activate(net.act, xs[-1]), net.weights[l - 1], net.biases[l - 1]))
    return xs


def predict(net: Network, xs: list[Tensor]) -> Tensor:
    """(B, D) the sensory prediction mu_{L-1} from the latents."""
    return linear(activate(net.act, xs[-1]), net.weights[-1], net.biases[-1])


def energy(
    net: Network,
    xs: list[Tensor],
    x: Tensor,
    known: Tensor | None,
    pi: tuple,
    f: list[Tensor],
    df: list[Tensor],
    sensory: GramSensory | None = None,
) -> tuple[Tensor, list[Tensor | None], Tensor | None]:
    """E at the state (x_0 .. x_{L-2} free, x clamped), with what its gradient needs.

    Arguments:
        xs: the free layers [x_0 (B, n_0), ..., x_{L-2} (B, H)].
        x: (B, D) the sensory values; known: (B, D) 1.0 / 0.0 (an unknown entry adds no
            error: it equals its prediction), or None = all known.
        pi: precisions (pi_0 .. pi_{L-1}); pi_0 a float or per cue (B, 1).
        f, df: buffers shaped like xs, overwritten with f(x_l) and f'(x_l).
        sensory: take the sensory message from the Gram matrix (all known); None: directly.

    Returns:
        (E (B,), eps, message): eps[l] (B, n_l) for l = 1 .. L-1 (eps[0] None, and
        eps[L-1] None on the Gram path); on the Gram path the sensory message (B, H)
        eps_{L-1} W_{L-1}, unweighted (E needs it there), else None (``gradient`` makes it).
    """
    L, W, b = len(net.weights) + 1, net.weights, net.biases
    top, bottom = L - 2, L - 1
    for l in range(L - 1):
        net.act(xs[l], f[l], df[l])
    e = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)  # (B,)
    eps: list[Tensor | None] = [None] * L
    for l in range(1, L - 1):  # eps_l = x_l - (W_l f(x_{l-1}) + b_l)
        eps[l] = linear(f[l - 1], W[l - 1], b[l - 1]).neg_().add_(xs[l])
        e.add_(torch.linalg.vector_norm(eps[l], dim=1).square_(), alpha=0.5 * pi[l])
    if sensory is not None:  # |eps_x|^2 = |x - b|^2 - f.u - f.message
        message = linear(f[top], sensory.gram).neg_().add_(sensory.u)
        e.add_(sensory.constant).sub_(
            torch.linalg.vecdot(f[top], sensory.u + message), alpha=0.5 * pi[bottom]
        )
    else:
        eps[bottom] = linear(f[top], W[-1], b[-1]).neg_().add_(x)  # (B, D)
        if known is not None:
            eps[bottom].mul_(known)
        message = None
        e.add_(torch.linalg.vector_norm(eps[bottom], dim=1).square_(), alpha=0.5 * pi[bottom])
    if has_prior(pi[0]):
        e.add_(prior_energy(xs[0], net.prior_mean, pi[0]))
    return e, eps, message


def gradient(
    net: Network,
    xs: list[Tensor],
    eps: list[Tensor | None],
    message: Tensor | None,
    df: list[Tensor],
    pi: tuple,
    out: list[Tensor],
) -> list[Tensor]:
    """dE/dx_l for the free layers, written into ``out`` (and returned), from ``energy``'s
    errors, message and f'. A Gram-path ``message`` is scaled by pi_{L-1} in place."""
    top = len(net.weights) - 1
    if message is None:  # eps_x W_x
        message = linear(eps[top + 1], net.transposed[-1])
    msg = [None] * top + [message.mul_(pi[top + 1])]  # pi_{l+1} eps_{l+1} W_{l+1}: (B, n_l)
    for l in range(top - 1, -1, -1):
        msg[l] = linear(eps[l + 1], net.transposed[l]).mul_(pi[l + 1])
    for l in range(top + 1):
        torch.mul(df[l], msg[l], out=out[l])
        out[l].neg_()
        if l >= 1:
            out[l].add_(eps[l], alpha=pi[l])
        elif has_prior(pi[0]):  # the prior's pull towards its mean
            out[0].add_((xs[0] - net.prior_mean).mul_(pi[0]))
    return out
