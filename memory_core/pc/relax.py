"""Relaxation: descend the PC energy over the free latents, the sensory layer clamped.

Functions of the weights and the state (``energy.Network``); ``PCMemory`` keeps what
lasts between calls (power-iteration vectors, transposed weights) and passes it in.

- Step sizes lr / L_l per layer, L_l a bound on the layer's block of E's Gauss-Newton
  Hessian from the spectral norms ||W_l|| (``step_sizes``), so plain steps with lr <= 1
  descend;
- ``heavy_ball``: the relaxation of training and noisy recall: plain steps plus momentum,
  and a step that raises a cue's energy is undone and that cue's momentum dropped (a
  restart), so E never rises;
- ``conjugate_gradients``: for partial cues, whose energy is ill-conditioned: nonlinear
  conjugate gradients with Gauss-Newton step lengths, each cue leaving the batch once its
  output has settled.

Measured behaviour (iterations, speed-ups, restarts) is in results/pc_defaults.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..interrupt import poll
from ..linalg import linear
from .energy import GramSensory, Network, energy, gradient, has_prior, predict, top_down

__all__ = [
    "CG_CHECK_EVERY",
    "POWER_COLD",
    "POWER_MASKED",
    "POWER_WARM",
    "SpectralNorms",
    "conjugate_gradients",
    "gram_is_cheaper",
    "heavy_ball",
    "masked_spectral_sq",
    "power_iteration",
    "step_sizes",
]

# Conjugate gradients check for convergence every this many iterations (PCConfig.complete_tol).
CG_CHECK_EVERY = 25
# Power-iteration rounds for ||W||_2: from a fixed start, warm from the last vector
# (weights move little between minibatches), and per cue for a masked sensory layer.
POWER_COLD, POWER_WARM, POWER_MASKED = 30, 3, 10


# --- step sizes ---------------------------------------------------------------------------
def power_iteration(w: Tensor, v: Tensor, iters: int) -> tuple[float, Tensor]:
    """(||w||_2^2, the top eigenvector of w^T w) by ``iters`` rounds from v (n_{l-1},).

    Approaches ||w||^2 from below (a Rayleigh quotient), so callers keep a margin."""
    v = v / v.norm().clamp_min(1e-30)
    value = 0.0
    for _ in range(iters):
        u = torch.mv(w.T, torch.mv(w, v))  # W^T W v: (n_{l-1},)
        value = float(torch.dot(v, u))  # Rayleigh quotient, rises to ||W||^2
        v = u / u.norm().clamp_min(1e-30)
    return max(value, float(torch.mv(w, v).square().sum())), v


def cold_start(w: Tensor, l: int) -> Tensor:
    """The fixed start vector of layer l's power iteration: the estimate outside ``fit`` is
    then a function of the weights alone (a loaded checkpoint recalls as its saver did)."""
    gen = torch.Generator().manual_seed(12345 + l)
    return torch.randn(w.shape[1], generator=gen, dtype=torch.float64).to(w.device, w.dtype)


class SpectralNorms:
    """||W_l||_2^2 per layer by power iteration, kept per weight version (Adam writes in
    place, which bumps the version).

    Outside ``fit`` (cold) the estimate is a function of the weights alone: ``POWER_COLD``
    rounds from a fixed start, so a loaded checkpoint recalls exactly as the model that
    saved it. Inside ``fit`` (warm) ``POWER_WARM`` rounds restart from the last
    eigenvector, since the weights move little between minibatches.
    """

    def __init__(self) -> None:
        self._kept: dict[int, tuple] = {}  # l -> (W_l, its version, eigenvector, ||W_l||^2, cold)

    def clear(self) -> None:
        self._kept.clear()

    def sq(self, l: int, w: Tensor, warm: bool = False) -> float:
        """||w||_2^2 for layer l's weight w."""
        kept = self._kept.get(l)
        same = kept is not None and kept[0] is w  # held, so ``is`` cannot see a reused id
        if same and kept[1] == w._version and (warm or kept[4]):
            return kept[3]
        start, iters = (kept[2], POWER_WARM) if warm and same else (cold_start(w, l), POWER_COLD)
        value, v = power_iteration(w, start, iters)
        self._kept[l] = (w, w._version, v, value, not warm)
        return value

    def vector(self, l: int) -> Tensor:
        """The top eigenvector of W_l^T W_l from the last ``sq`` of layer l."""
        return self._kept[l][2]


def masked_spectral_sq(w: Tensor, wt: Tensor, v0: Tensor, known: Tensor, iters: int) -> Tensor:
    """(B, 1) ||diag(known_b) W_x||_2^2 per cue: the sensory curvature the known entries
    alone put on the last hidden layer (batched power iteration from W_x's own top
    singular vector v0 (H,); each iteration costs one relaxation step). wt: W_x^T (H, D)."""
    v = v0.expand(known.shape[0], -1).clone()  # (B, H)
    value = torch.zeros(known.shape[0], 1, device=w.device, dtype=w.dtype)
    for _ in range(max(1, iters)):
        u = linear(linear(v, w).mul_(known), wt)  # (B, H): W^T M W v per cue
        value = (u * v).sum(1, keepdim=True)
        v = u / u.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return value.clamp_min(0.0)


def step_sizes(
    pi: tuple, lr: float, norms: list[float], masked_sq: Tensor | None = None
) -> list[Tensor | float]:
    """Step sizes lr / L_l, one per free layer 0 .. L-2 (per cue (B, 1) for the last one
    when ``masked_sq`` gives the known entries' curvature), L_l a bound on the layer's
    block of E's Gauss-Newton Hessian.

    With s_l = ||W_l||_2 (``norms``: [0, s_1, ..., s_{L-1}]) and f' <= 1, an error between
    two free layers obeys pi ||dx_l - W_l F' dx_{l-1}||^2 <= pi (1 + s_l)(||dx_l||^2
    + s_l ||dx_{l-1}||^2) (Cauchy-Schwarz), and the clamped sensory error
    pi ||M W F' dx||^2 <= pi ||M W||^2 ||dx||^2. Summing over the errors each layer
    appears in:

        L_l = pi_l (1 + s_l) [l >= 1]  +  pi_{l+1} s_{l+1} (1 + s_{l+1})   (l + 1 < L - 1)
                                        pi_{L-1} ||M W_{L-1}||^2           (l + 1 = L - 1)
        (+ pi_0 on the top, the prior)

    so in the metric diag(L_l) the Gauss-Newton Hessian is at most the identity: plain
    steps with lr < 2 descend E on the quadratic part, and lr <= 1 leaves a factor-2
    margin for the curvature tanh'' adds (proportional to the errors).
    """
    L, s = len(norms), norms
    bounds: list[Tensor | float] = []
    for l in range(L - 1):
        b = pi[0] if l == 0 else pi[l] * (1.0 + s[l])
        if l + 1 < L - 1:
            b = b + pi[l + 1] * s[l + 1] * (1.0 + s[l + 1])
        elif masked_sq is None:
            b = b + pi[L - 1] * s[L - 1] ** 2
        else:
            b = masked_sq.mul_(pi[L - 1]).add_(b)
        bounds.append(lr / b.clamp_min(1e-6) if isinstance(b, Tensor) else lr / max(b, 1e-6))
    return bounds


def gram_is_cheaper(hidden: int, dim: int, batch: int, steps: int) -> bool:
    """Whether the Gram matrix (2 H^2 D FLOPs once) beats two (B, H) x (H, D) products a step."""
    return (2 * hidden * dim + steps * 2 * batch * hidden) < steps * 4 * batch * dim


# --- heavy ball --------------------------------------------------------------------------------
def heavy_ball(
    net: Network,
    x: Tensor,
    known: Tensor | None,
    steps: int,
    lrs: list[Tensor | float],
    pi: tuple,
    momentum: float,
    sensory_gram: Tensor | None = None,
    trace: list[float] | None = None,
) -> tuple[list[Tensor], int, int]:
    """Descend E over the free latents x_0 .. x_{L-2} by plain steps plus momentum.

    Arguments:
        x: (B, D) sensory values; known: (B, D) 1.0 clamped / 0.0 free, or None.
        steps: relaxation steps; lrs: ``step_sizes``' output.
        pi: precisions (pi_0 .. pi_{L-1}).
        momentum: heavy-ball momentum.
        sensory_gram: W_x^T W_x (H, H): take the sensory message from it (``known`` None).
        trace: if a list, the batch's mean energy before each step and after the last is
            appended (costs one extra product per step).

    Returns:
        (the latents [x_0 (B, n_0), ..., x_{L-2} (B, n_{L-2})], restarts, backtracks):
        steps undone per cue because the energy rose, and of those the plain ones (the
        bound failed and that cue's step was halved).
    """
    L, B, dtype, device = len(net.weights) + 1, x.shape[0], x.dtype, x.device
    xs = top_down(net, B)
    f, df, grad = ([torch.empty_like(v) for v in xs] for _ in range(3))
    vel = [torch.zeros_like(v) for v in xs]
    bx = net.biases[-1]
    sensory = None
    if sensory_gram is not None:
        if known is not None:
            raise ValueError("the Gram-matrix message needs a fully clamped sensory layer")
        u = linear(x - bx, net.transposed[-1])  # (B, H): (x - b) W
    # Monotone descent, per cue: a step that raised a cue's energy (momentum can
    # overshoot) is undone and that cue's velocity zeroed (a restart); the plain step
    # that follows descends by the bound, and should one ever not, the cue's step size
    # is halved (backtracking).
    clamped = (x - bx) if known is None else (x - bx) * known
    c = 0.5 * pi[L - 1] * clamped.square().sum(1)  # (B,) the sensory energy at f = 0
    if sensory_gram is not None:
        sensory = GramSensory(u, sensory_gram, c)
    tol = 32 * torch.finfo(dtype).eps * c  # (B,) rounding of E's terms (the Gram form cancels)
    e_prev = torch.full((B,), math.inf, device=device, dtype=dtype)  # (B,) last accepted E
    prev = [v.clone() for v in xs]  # the last accepted state
    scale = torch.ones(B, 1, device=device, dtype=dtype)  # per-cue backtracking factor
    zero_vel = torch.ones(B, 1, device=device, dtype=torch.bool)  # the next step has no momentum
    last_plain = zero_vel.clone()  # the step that led here had none
    restarts = backtracks = step = 0
    while True:
        poll()  # a caller may cancel here (memory_core.interrupt)
        e, eps, message = energy(net, xs, x, known, pi, f, df, sensory)
        rose = (e > e_prev + tol).unsqueeze(1)  # (B, 1)
        if step > 0 and bool(rose.any()):
            for l in range(L - 1):
                torch.where(rose, prev[l], xs[l], out=xs[l])
                vel[l].masked_fill_(rose, 0.0)
            halve = rose & last_plain
            if bool(halve.any()):
                scale[halve] *= 0.5
                backtracks += int(halve.sum())
            restarts += int(rose.sum())
            zero_vel |= rose
            continue  # recompute at the restored state; not a step
        if trace is not None:  # the direct energy (the Gram form cancels)
            trace.append(float(energy(net, xs, x, known, pi, f, df)[0].mean()))
        if step == steps:
            break
        step += 1
        e_prev.copy_(e)
        for l in range(L - 1):
            prev[l].copy_(xs[l])
        gradient(net, xs, eps, message, df, pi, grad)
        for l in range(L - 1):
            grad[l].mul_(scale).mul_(lrs[l])  # the step: lr_l (per cue when a Tensor) x backtracking
            vel[l].mul_(momentum).sub_(grad[l])
            xs[l].add_(vel[l])
        last_plain.copy_(zero_vel)
        zero_vel.fill_(momentum == 0.0)
    return xs, restarts, backtracks


# --- conjugate gradients -------------------------------------------------------------------------
def _curvature(net: Network, p: list[Tensor], df: list[Tensor], known: Tensor | None, pi: tuple) -> Tensor:
    """(B,) p^T J^T Pi J p: E's Gauss-Newton curvature along p, J p the errors' linear
    response (eps_l: p_l - W_l (f'(x_{l-1}) p_{l-1}); the sensory: -known (W f'(x_top) p_top))."""
    L = len(net.weights) + 1
    c = torch.zeros(p[0].shape[0], device=p[0].device, dtype=p[0].dtype)
    if has_prior(pi[0]):
        c.add_(p[0].square().mul_(pi[0]).sum(1))
    for l in range(1, L):
        r = linear(df[l - 1] * p[l - 1], net.weights[l - 1])
        if l < L - 1:
            r.neg_().add_(p[l])
        elif known is not None:
            r.mul_(known)
        c.add_(torch.linalg.vector_norm(r, dim=1).square_(), alpha=pi[l])
    return c


def _dot(a: list[Tensor], c: list[Tensor]) -> Tensor:
    return sum(torch.linalg.vecdot(u, v) for u, v in zip(a, c, strict=True))


def _rows(t, keep: Tensor, batch: int):
    """Rows ``keep`` of t when t has one row per cue of a batch; else t as it is."""
    return t[keep] if isinstance(t, Tensor) and t.dim() and t.shape[0] == batch else t


def conjugate_gradients(
    net: Network,
    x: Tensor,
    known: Tensor | None,
    steps: int,
    P: list[Tensor | float],
    pi: tuple,
    trace: list[float] | None = None,
    tol: float = 0.0,
) -> list[Tensor]:
    """Descend E over the free latents by nonlinear conjugate gradients, per cue.

    A partial cue's energy is ill-conditioned: its known entries pin some directions of
    the latents hard and others barely, so heavy-ball descent creeps along the weak ones;
    conjugate directions take them a few at a time.

    Per iteration and cue: the gradient g preconditioned by the step sizes, s = P g; the
    direction p = -s + beta p_prev (Polak-Ribiere+, beta >= 0; back to -s when it is not a
    descent direction); the step length along p the Gauss-Newton minimiser
    alpha = -g.p / p^T J^T Pi J p (exact for a quadratic). A step that raises a cue's
    energy is undone, that cue's step halved and its direction reset to -s; accepted
    steps double it back towards 1. E never rises.

    Convergence: every ``CG_CHECK_EVERY`` iterations a cue whose sensory prediction has
    moved by at most ``tol`` (mean squared, over the D entries) has settled and leaves the
    batch, so when it stops does not depend on the other cues of its batch, and the
    products shrink as cues settle; the loop stops once every cue has.

    Arguments:
        x: (B, D) sensory values; known: (B, D) 1.0 clamped / 0.0 free, or None.
        steps: iterations at most (each costs about 1.5 heavy-ball steps: three products
            with the sensory weights instead of two).
        P: the diagonal preconditioner, ``step_sizes(pi, 1.0, ...)``.
        pi: precisions (pi_0 .. pi_{L-1}).
        trace: if a list, the batch's mean energy at the start and after every iteration
            is appended (its length - 1 is the iterations run).
        tol: see above; 0 runs all ``steps``.

    Returns:
        the latents [x_0 (B, n_0), ..., x_{L-2} (B, n_{L-2})].
    """
    L, B = len(net.weights) + 1, x.shape[0]
    xs = top_down(net, B)
    # f(x) is scratch (the curvature needs only f'), so one buffer serves both states.
    f, df, g, trial, df2, g2 = ([torch.empty_like(v) for v in xs] for _ in range(6))
    e, eps, message = energy(net, xs, x, known, pi, f, df)
    gradient(net, xs, eps, message, df, pi, g)
    s = [gl * Pl for gl, Pl in zip(g, P, strict=True)]
    p = [-v for v in s]
    gs = _dot(g, s)
    damp = torch.ones(B, device=x.device, dtype=x.dtype)
    # Rounding of E's terms: a recomputation at the same state may differ by this much.
    tol_e = 32 * torch.finfo(x.dtype).eps * e.abs()
    if trace is not None:
        trace.append(float(e.mean()))
    # The convergence check reads the sensory prediction (one product with the sensory
    # weights per CG_CHECK_EVERY iterations) and syncs with the host only then.
    last_out = predict(net, xs) if tol > 0 else None
    # A settled cue's latents go to ``done``; every per-cue tensor keeps the other rows
    # (``rows``: their places in the caller's batch).
    done = [v.clone() for v in xs] if tol > 0 else None
    rows = torch.arange(B, device=x.device)
    e_all = e.clone()  # (B0,) every cue's energy, for the trace
    for it in range(1, steps + 1):
        poll()
        alpha = (-_dot(g, p) / _curvature(net, p, df, known, pi).clamp_min(1e-30) * damp).unsqueeze(1)
        for l in range(L - 1):
            torch.addcmul(xs[l], alpha, p[l], out=trial[l])
        e2, eps2, message2 = energy(net, trial, x, known, pi, f, df2)
        gradient(net, trial, eps2, message2, df2, pi, g2)
        ok = e2 <= e + tol_e  # (B,)
        damp = torch.where(ok, damp.mul(2.0).clamp_max_(1.0), damp.mul(0.5))
        s2 = [gl * Pl for gl, Pl in zip(g2, P, strict=True)]
        gs2 = _dot(g2, s2)
        beta = ((gs2 - _dot(g2, s)) / gs.clamp_min(1e-30)).clamp_min_(0.0).unsqueeze(1)  # Polak-Ribiere+
        p2 = [torch.addcmul(-u, beta, d) for u, d in zip(s2, p, strict=True)]
        descent = (_dot(g2, p2) < 0).unsqueeze(1)
        okc = ok.unsqueeze(1)
        for l in range(L - 1):  # accepted cues move on; the others keep their state, restart at -s
            torch.where(okc, trial[l], xs[l], out=xs[l])
            torch.where(okc, df2[l], df[l], out=df[l])
            torch.where(okc, g2[l], g[l], out=g[l])
            torch.where(okc, s2[l], s[l], out=s[l])
            torch.where(okc & descent, p2[l], -s[l], out=p[l])
        gs = torch.where(ok, gs2, gs)
        e = torch.where(ok, e2, e)
        tol_e = 32 * torch.finfo(x.dtype).eps * e.abs()
        if trace is not None:
            trace.append(float(e_all.index_copy_(0, rows, e).mean()))
        if last_out is None or it % CG_CHECK_EVERY:
            continue
        out = predict(net, xs)
        moved = out.sub_(last_out)  # the output's known entries are the cue's: only the free ones count
        if known is not None:
            moved.mul_(1.0 - known)
        last_out.add_(moved)  # = the new prediction, without a second buffer
        still = torch.linalg.vector_norm(moved, dim=1).square_() > tol * x.shape[1]  # (B,)
        if bool(still.all()):
            continue
        for l in range(L - 1):
            done[l].index_copy_(0, rows, xs[l])
        if not bool(still.any()):
            return done
        keep = still.nonzero().squeeze(1)
        rows, x, known = rows[keep], x[keep], _rows(known, keep, B)
        pi, P = tuple(_rows(v, keep, B) for v in pi), [_rows(v, keep, B) for v in P]
        for buf in (xs, f, df, g, trial, df2, g2, s, p):
            buf[:] = [t[keep] for t in buf]
        gs, damp, e, tol_e, last_out = (t[keep] for t in (gs, damp, e, tol_e, last_out))
        B = len(keep)
    if done is None:
        return xs
    for l in range(L - 1):
        done[l].index_copy_(0, rows, xs[l])
    return done
