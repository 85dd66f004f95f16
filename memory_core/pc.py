"""Hierarchical predictive-coding memory (Salvatori et al., "Associative Memories via
Predictive Coding", NeurIPS 2021).

Layers run from the top latent (index 0) down to the sensory layer (index L-1, the
pattern). Each layer below the top is predicted from the one above:

    mu_l = W_l f(x_{l-1}) + b_l                          l = 1 .. L-1
    E    = sum_l pi_l / 2 ||x_l - mu_l||^2  (+ pi_0 / 2 ||x_0 - m||^2: a learned prior
                                              mean m on the top, off by default)

pi_l are the layers' precisions (inverse variances; 1 by default).

- Storing (``fit``): inference learning. The sensory layer is clamped to a minibatch of
  patterns, the latents start top-down from x_0 = 0 (the same start for every pattern,
  no per-pattern state), ``train_steps`` relaxation steps descend E over the latents,
  then one local weight step dW_l ~ pi_l eps_l f(x_{l-1})^T (Adam), and on to the next
  minibatch.
- Noisy recall: clamp the sensory layer to the cue, relax, replace the cue by the
  sensory prediction mu_{L-1}, repeat (the paper's F) until it stops changing.
- Partial recall: the known entries stay clamped; the unknown sensory entries are free
  values. Their energy term is minimised exactly at every step (x_u = mu_u, which zeroes
  their error), so relaxing the latents on the known entries' errors alone is the same
  fixed point reached without the free values lagging behind. Known entries come back
  exactly as given. This energy is ill-conditioned, so it relaxes by nonlinear conjugate
  gradients (``_relax_cg``) until its outputs stop moving (``complete_tol``), with a weak
  zero-mean prior on the top latent settling the directions the known entries leave
  almost free (``COMPLETE_TOP_PRIOR``).

The relaxation is the hot loop: hand-written updates (no autograd graph), batched
matrix products through oneDNN on the CPU (``memory_core.linalg``: about twice MKL's
sgemm on this project's machines), state buffers allocated once per call (oneDNN's
products allocate their (B, n) outputs). It is a descent method: steps
lr / L_l per layer, with L_l a bound on the layer's block of E's Gauss-Newton Hessian
from the spectral norms ||W_l|| (power iteration; per cue from the known entries for a
partial cue), so plain steps with lr <= 1 descend; heavy-ball momentum on top, and a
step that raises a cue's energy is undone and that cue's momentum dropped (a restart),
so E never rises. When the sensory layer is clamped, its bottom-up message
pi eps W = pi ((x - b) W - f(h) W^T W) is computed from the Gram matrix W^T W (H x H)
once per call instead of two (B, H) x (H, D) products per step, whichever is cheaper
(the Gram matrix from its upper triangle, ``linalg.gram``).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import Tensor

from .checks import EmptyMemoryError, check_batch, check_dtype, check_mask, resolve_device
from .linalg import gram, linear, uses_onednn  # x @ w.T via oneDNN on the CPU: ~2x MKL's sgemm here

__all__ = ["ACTIVATIONS", "FitHistory", "PCConfig", "PCMemory"]

_FORMAT = "ams-pc/1"

# Recall's default precision of the hidden layers, relative to training's (PCConfig.recall_precisions).
# Measured (README, "What the network's own output achieves"): 3 lifts noisy recall at
# width 2048 from 62% to 99.6% and Fashion-MNIST N = 100 from 49% to 62%, and 1/4 image
# completion from 86% to 90%, while leaving natural patches at widths 512 / 1024 as they
# were; 10 and 30 do no better at width 2048 (99.0%, 97.7%).
RECALL_HIDDEN_GAIN = 3.0
# The default precisions of a zero-mean Gaussian prior on the top latent in recall when
# training had none. Training relaxes every pattern's latents from 0, so the stored codes
# lie near it.
# - Partial cues (PCConfig.complete_prior_precision, scaled by the cue's known fraction,
#   ``PCMemory._partial_pi``): among latents that explain a partial cue almost equally
#   well (its energy is nearly flat along directions its known entries barely see) the
#   prior picks the one nearest the codes. Measured (README), with conjugate gradients:
#   1/4 image completion (N = 50, 64x64, width 512) 92% -> 94% against no prior (80% once
#   CG ran to 1000 iterations: the flat energy's exact minimum drifts). 0.1 costs 32
#   patches' 1/8 and 1/16 completion (100 / 94% -> 81 / 69%). Scaled to the codes'
#   precision as the noisy cues' is (below), no one factor served the four models measured
#   (32 patches at width 512; 50 64x64 patches at widths 512 / 1024 / 2048; README).
# - Noisy whole cues (PCConfig.recall_prior_precision): their entries are not exact, so
#   the prior may weigh more against them than against the exact entries of a partial
#   cue. Measured (README), Fashion-MNIST N = 100 at hidden widths 256 / 512 / 1024 / 2048:
#   92 / 76 / 62 / 51% correct with 0.03 -> 97 / 92 / 73 / 60% with 0.1 (0.3: 71 / 89 /
#   91 / 75%; models fit before ``stop_anneal``); natural patches unchanged (N = 1000,
#   width 1024: 99.6%).
COMPLETE_TOP_PRIOR = 0.03
RECALL_TOP_PRIOR = 0.1
# The noisy cues' prior scaled to the stored codes (PCMemory.recall_pi): pi_0 = this times
# the codes' precision, 1 / mean(z^2) over the stored set's top latents
# (PCMemory.code_precision). The best fixed pi_0 grows with the width and with how closely
# training fits: Fashion-MNIST N = 100, widths 256 / 512 / 1024 / 2048, best of 0.03 ..
# 3: 0.1 / 0.1 / 0.3 / 1.0 at code precisions 25 / 39 / 79 / 193 (and 0.3 / 1.0 at 53 /
# 129 for a closer fit), all within the grid's factor 3 of 0.005 x the codes' precision
# (README). RECALL_TOP_PRIOR stays for models fit before the codes were measured.
RECALL_PRIOR_PER_CODE_PRECISION = 0.005
# Conjugate gradients check for convergence every this many iterations (PCConfig.complete_tol).
CG_CHECK_EVERY = 25
# Power-iteration rounds for ||W||_2: from a fixed start, warm from the last vector
# (weights move little between minibatches), and per cue for a masked sensory layer.
_POWER_COLD, _POWER_WARM, _POWER_MASKED = 30, 3, 10


# --- activations: f and f' written into preallocated buffers -------------------------
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


ACTIVATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], None]] = {
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "linear": _linear,
    "relu": _relu,
}


def _cosine(step: int, steps: int) -> float:
    """A cosine schedule's weight on its start: 1 at step 0, 0 at step ``steps - 1``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, steps - 1))))


def _has_prior(pi0: float | Tensor) -> bool:
    """Whether the top latent has a prior term: pi_0 > 0, or per-cue precisions (a Tensor)."""
    return isinstance(pi0, Tensor) or pi0 > 0


# --- configuration ---------------------------------------------------------------------
@dataclass(frozen=True)
class PCConfig:
    """Every hyperparameter of a ``PCMemory`` (what its checkpoint's JSON holds).

    The defaults store a set well enough for the README's recall figures when ``fit``
    is called alone (measured on natural 32x32 patches and Fashion-MNIST, see the README).

    Attributes:
        sizes: layer widths from the top latent to the sensory layer, e.g. (256, 512, 3072).
        activation: f, one of ``ACTIVATIONS``.
        seed: initial weights and minibatch order.
        sensory_init: scale of the initial sensory weights relative to 1/sqrt(fan-in).
            Tiny (0.01) matters: with the usual scale, noise outside the stored
            patterns' span passes straight through recall.
        precisions: pi_1 .. pi_{L-1}, one per predicted layer (top to bottom); None = 1.
        prior_precision: pi_0 of a learned prior mean on the top latent; 0 = no prior.
        epochs: passes over the patterns in ``fit`` (at most; see ``stop_energy``).
        batch_size: patterns per weight step; None = N // 4 clipped to [8, 64] (small
            batches store a few patterns best, larger ones amortise the work of many).
        train_steps: relaxation steps per minibatch before its weight step (T).
        infer_lr: relaxation step size in units of 1 / L_l, each layer's curvature bound
            (see ``_step_sizes``): plain steps descend for values up to about 1-2.
        momentum: heavy-ball momentum of the relaxation (a step that raises a cue's
            energy is undone and its momentum dropped, so E never rises).
        weight_lr: Adam learning rate of the weights at the start of a ``fit`` call; it
            decays along a cosine to ``weight_lr * lr_floor`` at the call's last epoch
            (a constant rate made the energy climb again late in training).
        lr_floor: the last epoch's fraction of ``weight_lr``.
        cycles: cosine cycles the call's epochs are split into: the rate restarts at
            ``weight_lr`` at the start of each (warm restarts); ``stop_energy`` is
            checked in the last only. ``cycles=2, epochs=300`` is a trade-off, so the
            default is 1: it completes quarter images of 50 64x64 patches at width
            1024 far more often (86% -> 96%; width 512: 94% both), but passes more of
            a noisy cue's noise (natural patches, N = 1000, width 2048: 100% -> 69%;
            Fashion-MNIST N = 100, width 256: 97% -> 87%; README).
        restart_adam: start Adam afresh (zero moments) at each cycle's restart, as a
            second ``fit`` call on a checkpoint without Adam's state does; off, the
            moments carry over.
            With ``cycles=2, epochs=300`` it fits the stored set closer still and
            completes quarter images of 50 64x64 patches at width 1024 96%, all but the
            ambiguous pair (1/8 and 1/16 too; the default 86 / 88 / 88%), but denoises
            worse (Fashion-MNIST N = 100, widths 512-2048: 92-96% -> 85-88%; natural
            patches, N = 1000, width 2048: 100% -> 45%; README), so it is off by default.
        stop_energy: ``fit`` stops once an epoch's mean energy per pattern, divided by
            the pattern dimension, is at most this (after ``stop_anneal`` epochs).
        stop_anneal: epochs over which ``fit``, once ``stop_energy`` is reached, lowers
            the weight learning rate from where it is to the floor before stopping
            (fewer when the call's epochs run out first; 0 stops at once). Weights left
            at a high rate are unsettled: resuming a fit of 50 64x64 patches (width 512,
            from a checkpoint without Adam's state) reached the energy after 32 epochs,
            at 0.9x ``weight_lr``; stopped there it
            completed 46% of quarter images, against 94% before the call; with a tail of
            20 epochs 74%, of 40 94%. With Adam's moments carried over (a second call in
            the same process) it stopped at 32 epochs without the collapse (94%; README).
        recall_iters: at most this many rounds of F for a noisy cue.
        recall_steps: relaxation steps per round of F (and for ``energy``).
        recall_tol: F stops once no output moves by more than this (mean squared).
        recall_precisions: pi_1 .. pi_{L-1} used in recall and ``energy``. None: the
            training precisions with every hidden layer's raised ``RECALL_HIDDEN_GAIN``
            (3) times: a recall that trusts the learned prior more than the cue keeps a
            wide hidden layer from passing noise through (patches, N = 1000, width 2048:
            62% -> 99.6% correct; README). ``precisions`` itself restores equal trust.
        recall_prior_precision: pi_0 of a zero-mean Gaussian prior on the top latent in
            the recall of whole (noisy) cues and their ``energy``. None: the training
            prior's precision when there is one (``prior_precision`` > 0, around its
            learned mean), else ``RECALL_TOP_PRIOR`` (0.1) (training relaxes every
            pattern from a zero top latent, so the stored codes lie near 0), which the
            recall of noisy cues (not ``energy``) scales to the stored codes:
            ``RECALL_PRIOR_PER_CODE_PRECISION`` x ``PCMemory.code_precision``
            (``PCMemory.recall_pi``; a model without a code precision keeps 0.1;
            README). 0 turns it off.
        complete_prior_precision: the same for partial cues (completion and masked
            ``energy``), scaled per cue by the fraction of entries known. None: the
            training prior's precision when there is one, else ``COMPLETE_TOP_PRIOR``
            (0.03): it settles the directions a partial cue leaves almost free, and a
            partial cue's known entries are exact, so it weighs less than for a noisy
            cue. 0 turns it off.
        complete_method: the relaxation for a partial cue. "cg" (default): nonlinear
            conjugate gradients with Gauss-Newton step lengths (see ``_relax_cg``);
            converges on the ill-conditioned energy of a partial cue in hundreds of
            iterations where heavy-ball momentum needs tens of thousands. "momentum":
            the relaxation of training and noisy recall with ``complete_lr`` and
            ``complete_momentum``.
        complete_steps: iterations for a partial cue (at most, with "cg": see
            ``complete_tol``).
        complete_tol: "cg" stops a cue once its output has moved by at most this
            (mean squared over the D entries) in ``CG_CHECK_EVERY`` (25) iterations,
            and the batch once every cue has stopped; 0 runs all ``complete_steps``.
        complete_lr: step size for a partial cue with "momentum" (units as
            ``infer_lr``, the bound from the known entries alone).
        complete_momentum: momentum for a partial cue with "momentum" (a pure,
            ill-conditioned descent: more momentum converges faster than the training value).
        max_batch: cues relaxed at once (bounds memory).
    """

    sizes: tuple[int, ...] = (256, 512, 3072)
    activation: str = "tanh"
    seed: int = 0
    sensory_init: float = 0.01
    precisions: tuple[float, ...] | None = None
    prior_precision: float = 0.0
    epochs: int = 150
    batch_size: int | None = None
    train_steps: int = 20
    infer_lr: float = 1.0
    momentum: float = 0.5
    weight_lr: float = 1e-3
    lr_floor: float = 0.05
    cycles: int = 1
    restart_adam: bool = False
    stop_energy: float = 1e-5
    stop_anneal: int = 40
    recall_iters: int = 3
    recall_steps: int = 200
    recall_tol: float = 1e-6
    recall_precisions: tuple[float, ...] | None = None
    recall_prior_precision: float | None = None
    complete_prior_precision: float | None = None
    complete_method: str = "cg"
    complete_steps: int = 2000
    complete_tol: float = 1e-9
    complete_lr: float = 1.0
    complete_momentum: float = 0.9
    max_batch: int = 1024

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list >= 2 positive layer widths (top ... sensory), got {sizes}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("precisions", "recall_precisions"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(float(p) for p in value)
            object.__setattr__(self, name, value)
            if len(value) != len(sizes) - 1 or min(value) <= 0:
                raise ValueError(f"{name} needs {len(sizes) - 1} positive values (one per predicted layer), got {value}")
        if self.complete_method not in ("cg", "momentum"):
            raise ValueError(f"complete_method must be 'cg' or 'momentum', got {self.complete_method!r}")
        for name in ("recall_prior_precision", "complete_prior_precision"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value!r}")
        if not isinstance(self.restart_adam, bool):
            raise ValueError(f"restart_adam must be true or false, got {self.restart_adam!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        positive = ("epochs", "cycles", "recall_iters", "max_batch", "infer_lr", "weight_lr", "complete_lr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("train_steps", "recall_steps", "complete_steps", "sensory_init", "prior_precision",
                     "stop_energy", "stop_anneal", "recall_tol", "lr_floor", "complete_tol"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("momentum", "complete_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def pi(self) -> tuple[float, ...]:
        """(pi_0, pi_1, ..., pi_{L-1}): training precisions, pi_0 the prior's (0 = none)."""
        return (self.prior_precision, *(self.precisions or (1.0,) * (len(self.sizes) - 1)))

    @property
    def recall_pi(self) -> tuple[float, ...]:
        """Precisions of the recall of whole cues and their ``energy`` (pi_0, ..., pi_{L-1}),
        as far as the config sets them (for noisy cues ``PCMemory.recall_pi`` scales an unset
        pi_0 to the stored codes)."""
        return (self._recall_prior(self.recall_prior_precision, RECALL_TOP_PRIOR), *self._recall_layer_pi())

    @property
    def complete_pi(self) -> tuple[float, ...]:
        """Precisions used for partial cues, before ``PCMemory._partial_pi`` scales pi_0 per cue."""
        return (self._recall_prior(self.complete_prior_precision, COMPLETE_TOP_PRIOR), *self._recall_layer_pi())

    def _recall_prior(self, value: float | None, default: float) -> float:
        if value is not None:
            return value
        return self.prior_precision if self.prior_precision > 0 else default

    def _recall_layer_pi(self) -> tuple[float, ...]:
        if self.recall_precisions is not None:
            return self.recall_precisions
        *hidden, sensory = self.pi[1:]
        return (*(RECALL_HIDDEN_GAIN * p for p in hidden), sensory)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> PCConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PCConfig keys: {unknown}")
        return cls(**data)


@dataclass
class FitHistory:
    """What ``fit`` did: the energy of every epoch and why it stopped.

    Behaves like the list of per-epoch energies (``len``, indexing, iteration).

    Attributes:
        energies: mean energy per pattern of each epoch, measured after relaxation and
            before that minibatch's weight step.
        stopped: "epochs" (all run), "energy" (reached ``stop_energy``, then annealed the
            weight rate over ``stop_anneal`` epochs) or "callback".
        seconds: wall time of the call.
    """

    energies: list[float] = field(default_factory=list)
    stopped: str = "epochs"
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.energies)

    def __getitem__(self, i):
        return self.energies[i]

    def __iter__(self) -> Iterator[float]:
        return iter(self.energies)


# --- the memory ----------------------------------------------------------------------------
class PCMemory:
    """A hierarchical predictive-coding associative memory.

    Arguments:
        sizes: layer widths, top latent first, sensory (pattern dimension D) last.
        activation: f between layers (``ACTIVATIONS``).
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        seed: initial weights and minibatch order (fit is deterministic given it).
        config: a full ``PCConfig``; its sizes/activation/seed are replaced by the
            arguments above.
        dtype: float32 (default) or float64; float16/bfloat16 only on a GPU.
        **overrides: any other ``PCConfig`` field, e.g. ``epochs=300``.

    Attributes (diagnostics, cumulative; reset them by assigning 0):
        restarts: relaxation steps undone, per cue, because the energy rose (momentum
            overshoot; the cue goes on from the previous state without momentum).
        backtracks: of those, plain steps undone: the step-size bound failed and that
            cue's step was halved (0 on real data at the defaults, see the tests).

    Example:
        >>> pc = PCMemory(sizes=[256, 512, 3072])
        >>> history = pc.fit(patterns)              # (N, 3072) in [0, 1]
        >>> out = pc.retrieve(noisy)                 # (B, 3072)
        >>> out = pc.retrieve(cue, mask=known)       # known: (B, 3072) bool
    """

    def __init__(
        self,
        sizes: list[int] | tuple[int, ...],
        activation: str = "tanh",
        device: str | torch.device = "auto",
        seed: int = 0,
        config: PCConfig | None = None,
        dtype: torch.dtype = torch.float32,
        **overrides,
    ) -> None:
        base = config or PCConfig()
        names = {f.name for f in fields(PCConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown PCMemory arguments: {unknown} (PCConfig fields: {sorted(names)})")
        self.config = replace(base, sizes=tuple(sizes), activation=activation, seed=int(seed), **overrides)
        self.device = resolve_device(device)
        self.dtype = check_dtype(dtype, self.device)
        self._act = ACTIVATIONS[self.config.activation]
        self.trained_count = 0
        self._opt: torch.optim.Optimizer | None = None
        self._epochs_done = 0
        self.restarts = 0
        self.backtracks = 0
        self._power: dict[int, tuple] = {}  # l -> (W_l, its version, top eigenvector of W_l^T W_l, ||W_l||^2, cold)
        self._recall_cache: tuple | None = None  # see _recall_weights
        self.code_precision: float | None = None  # 1 / mean(z^2) of the stored codes, set by fit
        self._init_params()

    # --- parameters ------------------------------------------------------------------
    def _init_params(self) -> None:
        cfg, sizes = self.config, self.config.sizes
        gen = torch.Generator().manual_seed(cfg.seed)
        self.weights: list[Tensor] = []  # weights[l-1] = W_l: (sizes[l], sizes[l-1])
        self.biases: list[Tensor] = []  # biases[l-1] = b_l: (sizes[l],)
        for l in range(1, len(sizes)):
            scale = 1.0 / math.sqrt(sizes[l - 1])
            if l == len(sizes) - 1:
                scale *= cfg.sensory_init
            w = torch.randn(sizes[l], sizes[l - 1], generator=gen, dtype=torch.float64) * scale
            self.weights.append(w.to(self.device, self.dtype))
            self.biases.append(torch.zeros(sizes[l], device=self.device, dtype=self.dtype))
        self.prior_mean = torch.zeros(sizes[0], device=self.device, dtype=self.dtype)

    def parameters(self) -> list[Tensor]:
        """The learned tensors: W_1, b_1, ..., W_{L-1}, b_{L-1}, then the prior mean."""
        return [t for pair in zip(self.weights, self.biases) for t in pair] + [self.prior_mean]

    def _parameter_names(self) -> list[str]:
        """Checkpoint names of ``parameters()``, in the same order: W1, b1, ..., prior_mean."""
        return [n for l in range(1, len(self.sizes)) for n in (f"W{l}", f"b{l}")] + ["prior_mean"]

    def _adam_tensors(self) -> dict[str, Tensor]:
        """Adam's state as named tensors, where they are ({} before the first weight step): per
        parameter that has taken a step, ``adam.<name>.m`` / ``.v`` (first and second
        moments) and ``adam.<name>.step`` (a 0-d float, the step count of its bias correction)."""
        if self._opt is None:
            return {}
        out = {}
        for name, p in zip(self._parameter_names(), self.parameters()):
            state = self._opt.state.get(p)
            if state:
                out[f"adam.{name}.m"] = state["exp_avg"]
                out[f"adam.{name}.v"] = state["exp_avg_sq"]
                out[f"adam.{name}.step"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(())
        return out

    def _restore_adam(self, tensors: dict[str, Tensor]) -> None:
        """A fresh optimizer over the current parameters, loaded with ``_adam_tensors``'s
        output (moments cast to the parameters' dtype and device); nothing when it is empty."""
        if not tensors:
            return
        self._opt = self._optimizer(self.config.weight_lr)
        state = {}
        for i, (name, p) in enumerate(zip(self._parameter_names(), self.parameters())):
            if f"adam.{name}.m" in tensors:
                state[i] = {"step": tensors[f"adam.{name}.step"].detach().clone(),
                            "exp_avg": tensors[f"adam.{name}.m"].to(p.device, p.dtype),
                            "exp_avg_sq": tensors[f"adam.{name}.v"].to(p.device, p.dtype)}
        # load_state_dict places each step count where this optimizer's kernel wants it
        self._opt.load_state_dict({"state": state, "param_groups": self._opt.state_dict()["param_groups"]})

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.config.sizes

    @property
    def dim(self) -> int:
        """D, the pattern (sensory layer) dimension."""
        return self.config.sizes[-1]

    @property
    def is_trained(self) -> bool:
        return self.trained_count > 0

    def to(self, device: str | torch.device) -> PCMemory:
        """Move the model, Adam's state included, to ``device`` (in place); returns self."""
        self.device = resolve_device(device)
        check_dtype(self.dtype, self.device)
        adam = self._adam_tensors()
        self.weights = [w.to(self.device) for w in self.weights]
        self.biases = [b.to(self.device) for b in self.biases]
        self.prior_mean = self.prior_mean.to(self.device)
        self._opt = None
        self._recall_cache = None  # it holds the old device's tensors
        self._restore_adam(adam)
        return self

    def __repr__(self) -> str:
        return (f"PCMemory(sizes={list(self.sizes)}, activation={self.config.activation!r}, "
                f"device={str(self.device)!r}, trained_count={self.trained_count})")

    # --- the hot loop ----------------------------------------------------------------
    def _spectral_sq(self, l: int, warm: bool = False) -> float:
        """||W_l||_2^2, the largest eigenvalue of W_l^T W_l, by power iteration.

        Cached per weight version (Adam writes in place, which bumps the version).
        Outside ``fit`` the estimate is a function of the weights alone (``_POWER_COLD``
        rounds from a fixed start), so a loaded checkpoint recalls exactly as the model
        that saved it. Inside ``fit`` (``warm``) it restarts from the last eigenvector
        (weights move little between minibatches): ``_POWER_WARM`` matrix-vector pairs
        per minibatch. Power iteration approaches ||W||^2 from below; lr <= 1 keeps a
        factor-2 margin for that too.
        """
        w = self.weights[l - 1]
        cached = self._power.get(l)  # (tensor, version, eigenvector, value, cold)
        same = cached is not None and cached[0] is w  # held, so ``is`` cannot see a reused id
        if same and cached[1] == w._version and (warm or cached[4]):
            return cached[3]
        if warm and same:
            v, iters = cached[2], _POWER_WARM
        else:  # a fixed start: deterministic
            gen = torch.Generator().manual_seed(12345 + l)
            v = torch.randn(w.shape[1], generator=gen, dtype=torch.float64).to(w.device, w.dtype)
            iters = _POWER_COLD
        v = v / v.norm().clamp_min(1e-30)
        value = 0.0
        for _ in range(iters):
            u = torch.mv(w.T, torch.mv(w, v))  # W^T W v: (n_{l-1},)
            value = float(torch.dot(v, u))  # Rayleigh quotient, rises to ||W||^2
            v = u / u.norm().clamp_min(1e-30)
        value = max(value, float(torch.mv(w, v).square().sum()))
        self._power[l] = (w, w._version, v, value, not warm)
        return value

    def _recall_weights(self, onednn: bool, with_gram: bool) -> tuple[list[Tensor], Tensor | None]:
        """The weights as recall's messages read them, and the sensory Gram matrix, kept
        between calls until a weight changes.

        Returns W_l^T (n_{l-1}, n_l) for every layer (contiguous copies for oneDNN's
        linear, which reads the rows of its right factor; views for torch's matmul) and,
        with ``with_gram``, G = W_x^T W_x (H, H) (else whatever is kept, maybe None).
        Recall does not change the weights, so they are computed once between trainings
        instead of in every round of every call: a weight written in place (Adam) bumps
        its version, a replaced one is another object (held here, so ``is`` cannot see a
        reused id). Costs the weights' bytes again on oneDNN, plus H^2 for G.
        """
        cached, W = self._recall_cache, self.weights
        if (cached is not None and cached[0] == onednn and len(cached[1]) == len(W)
                and all(c is w and v == w._version for (c, v), w in zip(cached[1], W, strict=True))):
            Wt, G = cached[2], cached[3]
        else:
            Wt, G = [w.T.contiguous() if onednn else w.T for w in W], None
        if with_gram and G is None:
            G = gram(Wt[-1])  # (H, H): exactly symmetric (so f G = f G^T, what linear computes)
        self._recall_cache = (onednn, [(w, w._version) for w in W], Wt, G)
        return Wt, G

    @property
    def recall_pi(self) -> tuple[float, ...]:
        """Precisions of the recall of noisy cues: ``config.recall_pi``, except that a top
        prior neither the config nor a training prior sets is scaled to the stored codes,
        ``RECALL_PRIOR_PER_CODE_PRECISION`` x ``code_precision`` (the config's
        ``RECALL_TOP_PRIOR`` for a model fit before code precisions were kept)."""
        cfg, pi = self.config, self.config.recall_pi
        unset = cfg.recall_prior_precision is None and not cfg.prior_precision > 0  # pi_0 is the default's
        if unset and self.code_precision is not None:
            return (RECALL_PRIOR_PER_CODE_PRECISION * self.code_precision, *pi[1:])
        return pi

    def _code_precision(self, patterns: Tensor) -> float:
        """1 / mean(z^2): how tightly the stored set's codes sit around the top prior's
        mean 0. z (N, n_0) are the top latents training's energy gives the patterns
        (``recall_steps`` relaxation steps, training's precisions), averaged over the set
        and the units."""
        cfg = self.config
        square_sum = sum(float(self._relax(c, None, cfg.recall_steps, cfg.infer_lr, cfg.pi)[0].square().sum())
                         for (c,) in self._chunks(patterns))
        return patterns.shape[0] * self.sizes[0] / max(square_sum, 1e-30)

    def _masked_spectral_sq(self, known: Tensor, iters: int) -> Tensor:
        """(B, 1) ||diag(known_b) W_x||_2^2 per cue: the sensory curvature the known
        entries alone put on the last hidden layer (batched power iteration, started
        from W_x's own top singular vector; each iteration costs one relaxation step)."""
        w = self.weights[-1]
        self._spectral_sq(len(self.sizes) - 1)
        v = self._power[len(self.sizes) - 1][2].expand(known.shape[0], -1).clone()  # (B, H)
        value = torch.zeros(known.shape[0], 1, device=w.device, dtype=w.dtype)
        wt = self._recall_weights(uses_onednn(w), with_gram=False)[0][-1]  # (H, D): W_x^T
        for _ in range(max(1, iters)):
            u = linear(linear(v, w).mul_(known), wt)  # (B, H): W^T M W v per cue
            value = (u * v).sum(1, keepdim=True)
            v = u / u.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return value.clamp_min(0.0)

    def _step_sizes(self, pi: tuple[float, ...], lr: float, known: Tensor | None = None,
                    warm: bool = False) -> list[Tensor | float]:
        """Step sizes lr / L_l, one per free layer 0 .. L-2 (per cue for the last one
        when ``known`` masks the sensory layer), with L_l a bound on the layer's block of
        E's Gauss-Newton Hessian.

        With s_l = ||W_l||_2 and f' <= 1 (tanh, sigmoid, relu, linear), an error between
        two free layers obeys pi ||dx_l - W_l F' dx_{l-1}||^2 <= pi (1 + s_l)(||dx_l||^2
        + s_l ||dx_{l-1}||^2) (Cauchy-Schwarz), and the clamped sensory error
        pi ||M W F' dx||^2 <= pi ||M W||^2 ||dx||^2. Summing over the errors each layer
        appears in:

            L_l = pi_l (1 + s_l) [l >= 1]  +  pi_{l+1} s_{l+1} (1 + s_{l+1})   (l + 1 < L - 1)
                                            pi_{L-1} ||M W_{L-1}||^2           (l + 1 = L - 1)
            (+ pi_0 on the top, the prior)

        so in the metric diag(L_l) the Gauss-Newton Hessian is at most the identity:
        plain steps with lr < 2 descend E on the quadratic part, and lr <= 1 leaves a
        factor-2 margin for the curvature tanh'' adds (proportional to the errors).
        """
        L = len(self.sizes)
        s = [0.0] + [math.sqrt(self._spectral_sq(l, warm)) for l in range(1, L)]
        bounds: list[Tensor | float] = []
        for l in range(L - 1):
            b = pi[0] if l == 0 else pi[l] * (1.0 + s[l])
            if l + 1 < L - 1:
                b = b + pi[l + 1] * s[l + 1] * (1.0 + s[l + 1])
            elif known is None:
                b = b + pi[L - 1] * s[L - 1] ** 2
            else:
                b = self._masked_spectral_sq(known, _POWER_MASKED).mul_(pi[L - 1]).add_(b)
            bounds.append(lr / b.clamp_min(1e-6) if isinstance(b, Tensor) else lr / max(b, 1e-6))
        return bounds

    def _relax(
        self,
        x: Tensor,
        known: Tensor | None,
        steps: int,
        lr: float,
        pi: tuple[float, ...],
        trace: list[float] | None = None,
        use_gram: bool | None = None,
        momentum: float | None = None,
        warm: bool = False,
        reuse: bool = False,
    ) -> list[Tensor]:
        """Descend E over the free latents x_0 .. x_{L-2}; the sensory layer is clamped.

        Arguments:
            x: (B, D) sensory values.
            known: (B, D) 1.0 where the sensory entry is clamped, 0.0 where it is free
                (eliminated exactly: its error is zero); None = all clamped.
            steps, lr: relaxation steps and base step size.
            pi: precisions (pi_0 .. pi_{L-1}).
            trace: if a list, the batch's mean energy before each step and after the
                last is appended (for tests; costs one extra product per step).
            use_gram: force (True) or forbid (False) the Gram-matrix message; None picks
                the cheaper. Only for a fully clamped sensory layer.
            momentum: heavy-ball momentum (None: ``config.momentum``).
            warm: inside ``fit``: step sizes from warm-started power iteration.
            reuse: recall: the weights' transposes and the Gram matrix are kept between
                calls (``_recall_weights``), and the Gram message is then used at any batch.

        Returns:
            the latents [x_0 (B, n_0), ..., x_{L-2} (B, n_{L-2})] after relaxation.
        """
        L, W, b = len(self.sizes), self.weights, self.biases
        B, n = x.shape[0], self.sizes
        top, bottom = L - 2, L - 1  # last free layer; the sensory layer
        new = lambda k: torch.empty(B, k, device=x.device, dtype=x.dtype)

        # Top-down start: x_0 = prior mean (0 unless learned), x_l = mu_l.
        xs = [self.prior_mean.expand(B, -1).clone()]
        for l in range(1, L - 1):
            xs.append(linear(self._f(xs[-1]), W[l - 1], b[l - 1]))
        f = [new(n[l]) for l in range(L - 1)]  # f(x_l): (B, n_l)
        df = [new(n[l]) for l in range(L - 1)]  # f'(x_l): (B, n_l)
        eps: list[Tensor | None] = [None] * (L - 1)  # errors of the free predicted layers: (B, n_l)
        grad = [new(n[l]) for l in range(L - 1)]
        vel = [torch.zeros_like(v) for v in xs]
        msg: list[Tensor | None] = [None] * (L - 1)  # bottom-up messages pi_{l+1} eps_{l+1} W_{l+1}: (B, n_l)
        # The messages multiply by W_{l+1} untransposed; oneDNN's linear reads the rows of
        # its right factor, so it gets W_{l+1}^T as a contiguous copy (once per call: the
        # weights are fixed while relaxing; in recall once until they change), torch's
        # matmul a free transposed view.
        G = None
        if reuse:
            Wt, G = self._recall_weights(uses_onednn(x), with_gram=known is None and use_gram is not False)
        else:
            Wt = [w.T.contiguous() if uses_onednn(x) else w.T for w in W]  # W_l^T: (n_{l-1}, n_l)
        lrs = self._step_sizes(pi, lr, known, warm)
        momentum = self.config.momentum if momentum is None else momentum

        Wx, bx, H, D = W[-1], b[-1], n[top], n[bottom]
        # Clamped sensory layer: the bottom-up message from the Gram matrix when cheaper.
        # Made for this call it costs 2 H^2 D FLOPs; kept from the last (reuse) nothing, and
        # a step's (B, H) x (H, H) product then beats the direct (B, H) x (H, D) pair at
        # any batch (one cue: the direct pair streams the sensory weights twice a step).
        if use_gram is None:
            use_gram = known is None and (reuse or (2 * H * D + steps * 2 * B * H) < steps * 4 * B * D)
        elif use_gram and known is not None:
            raise ValueError("the Gram-matrix message needs a fully clamped sensory layer")
        if use_gram:
            u = linear(x - bx, Wt[-1])  # (B, H): (x - b) W
            if G is None:
                G = gram(Wt[-1])  # (H, H): W^T W, exactly symmetric (so f G = f G^T, what linear computes)

        # Monotone descent, per cue: a step that raised a cue's energy (momentum can
        # overshoot) is undone and that cue's velocity zeroed (a restart); the plain
        # step that follows descends by the bound above, and should one ever not, the
        # cue's step size is halved (backtracking; ``self.backtracks`` counts them).
        clamped = (x - bx) if known is None else (x - bx) * known
        c = 0.5 * pi[bottom] * clamped.square().sum(1)  # (B,) the sensory energy at f = 0
        tol = 32 * torch.finfo(x.dtype).eps * c  # (B,) rounding of E's terms (the Gram form cancels)
        e_prev = torch.full((B,), math.inf, device=x.device, dtype=x.dtype)  # (B,) last accepted E
        prev = [v.clone() for v in xs]  # the last accepted state
        scale = torch.ones(B, 1, device=x.device, dtype=x.dtype)  # per-cue backtracking factor
        zero_vel = torch.ones(B, 1, device=x.device, dtype=torch.bool)  # the next step has no momentum
        last_plain = zero_vel.clone()  # the step that led here had none
        step = 0
        while True:
            for l in range(L - 1):
                self._act(xs[l], f[l], df[l])
            e = torch.zeros(B, device=x.device, dtype=x.dtype)  # (B,) E at this state
            for l in range(1, L - 1):  # eps_l = x_l - (W_l f(x_{l-1}) + b_l)
                eps[l] = linear(f[l - 1], W[l - 1], b[l - 1]).neg_().add_(xs[l])
                e.add_(torch.linalg.vector_norm(eps[l], dim=1).square_(), alpha=0.5 * pi[l])
            if use_gram:  # pi eps_x W_x = pi ((x - b) W - f G);  |eps_x|^2 = |x - b|^2 - f.u - f.msg
                msg[top] = linear(f[top], G).neg_().add_(u)
                e.add_(c).sub_(torch.linalg.vecdot(f[top], u + msg[top]), alpha=0.5 * pi[bottom])
            else:
                eps_x = linear(f[top], Wx, bx).neg_().add_(x)  # (B, D)
                if known is not None:
                    eps_x.mul_(known)
                msg[top] = linear(eps_x, Wt[-1])
                e.add_(torch.linalg.vector_norm(eps_x, dim=1).square_(), alpha=0.5 * pi[bottom])
            if _has_prior(pi[0]):
                e.add_(self._prior_energy(xs[0], pi[0]))
            rose = (e > e_prev + tol).unsqueeze(1)  # (B, 1)
            if step > 0 and bool(rose.any()):
                for l in range(L - 1):
                    torch.where(rose, prev[l], xs[l], out=xs[l])
                    vel[l].masked_fill_(rose, 0.0)
                halve = rose & last_plain
                if bool(halve.any()):
                    scale[halve] *= 0.5
                    self.backtracks += int(halve.sum())
                self.restarts += int(rose.sum())
                zero_vel |= rose
                continue  # recompute at the restored state; not a step
            if trace is not None:
                trace.append(float(self._energy_from(xs, f, eps, x, known, pi).mean()))
            if step == steps:
                break
            step += 1
            e_prev.copy_(e)
            for l in range(L - 1):
                prev[l].copy_(xs[l])
            msg[top].mul_(pi[bottom])
            for l in range(top - 1, -1, -1):
                msg[l] = linear(eps[l + 1], Wt[l]).mul_(pi[l + 1])
            for l in range(L - 1):
                # dE/dx_l = pi_l eps_l - f'(x_l) * message from below
                torch.mul(df[l], msg[l], out=grad[l])
                grad[l].neg_()
                if l >= 1:
                    grad[l].add_(eps[l], alpha=pi[l])
                elif _has_prior(pi[0]):  # the prior's pull towards its mean
                    grad[0].add_((xs[0] - self.prior_mean).mul_(pi[0]))
                grad[l].mul_(scale).mul_(lrs[l])  # the step: lr_l (per cue when a Tensor) x backtracking
                vel[l].mul_(momentum).sub_(grad[l])
                xs[l].add_(vel[l])
            last_plain.copy_(zero_vel)
            zero_vel.fill_(momentum == 0.0)
        return xs

    def _relax_cg(self, x: Tensor, known: Tensor | None, steps: int, pi: tuple[float, ...],
                  trace: list[float] | None = None, tol: float = 0.0) -> list[Tensor]:
        """Descend E over the free latents by nonlinear conjugate gradients, per cue.

        A partial cue's energy is ill-conditioned: its known entries pin some directions
        of the latents hard and others (those that mostly move the unknown entries)
        barely, so heavy-ball descent creeps along the weak ones (tens of thousands of
        steps). Conjugate directions take them a few at a time (on a quadratic, CG needs
        about as many iterations as the curvature has distinct groups of eigenvalues).

        Per iteration and cue: the gradient g (the same local errors and messages as
        ``_relax``), preconditioned by the layers' step sizes 1 / L_l (``_step_sizes``):
        s = P g; the direction p = -s + beta p_prev (Polak-Ribiere+, beta >= 0; back to
        -s when it is not a descent direction); the step length along p the Gauss-Newton
        minimiser alpha = -g.p / p^T J^T Pi J p (exact for a quadratic), with
        J p the errors' linear response (eps_l: p_l - W_l (f'(x_{l-1}) p_{l-1}); the
        sensory: -known (W f'(x_top) p_top)). A step that raises a cue's energy is
        undone and that cue's step halved and direction reset to -s; accepted steps
        double it back towards 1. E never rises.

        Convergence: every ``CG_CHECK_EVERY`` iterations the sensory prediction is
        compared with the previous check's; a cue whose prediction has moved by at most
        ``tol`` (mean squared, over all D entries) has settled and leaves the batch, so
        when it stops does not depend on the other cues of its batch (a half image in
        float64: 6e-15 from its answer alone; 5e-5 when it ran on with the batch; float32
        rounding still differs between batch sizes), and the products shrink as cues
        settle (1.14-1.23x faster than running settled cues on with zero-length steps
        for 50 cues of one fraction, 1.49x for a mix of 1/2 .. 1/16; README). The loop
        stops once every cue has settled. How long a partial cue takes
        depends on how much of it is given (50 64x64 patches, width 512, tol 1e-9: 350
        iterations with half the rows given, 700 with a quarter, 1025 with 1/16;
        README), so a fixed count is either wasted or short.

        Arguments:
            x: (B, D) sensory values; known: (B, D) 1.0 clamped / 0.0 free, or None.
            steps: iterations (each costs about 1.5 steps of ``_relax``: three products
                with the sensory weights instead of two).
            pi: precisions (pi_0 .. pi_{L-1}).
            trace: if a list, the batch's mean energy at the start and after every
                iteration is appended (for tests: its length - 1 is the iterations run).
            tol: a cue stops (leaves the batch) once its prediction moves by at most
                this per ``CG_CHECK_EVERY`` iterations, the loop once all have; 0 runs
                all ``steps``.

        Returns:
            the latents [x_0 (B, n_0), ..., x_{L-2} (B, n_{L-2})].
        """
        L, W, b = len(self.sizes), self.weights, self.biases
        B, n = x.shape[0], self.sizes
        new = lambda k: torch.empty(B, k, device=x.device, dtype=x.dtype)
        col = lambda v: v.unsqueeze(1)
        Wt = self._recall_weights(uses_onednn(x), with_gram=False)[0]  # W_l^T: (n_{l-1}, n_l)
        P = self._step_sizes(pi, 1.0, known)  # diagonal preconditioner, per layer (per cue for the last)

        def evaluate(xs: list[Tensor], f, df, g) -> Tensor:
            """E (B,) at xs; f, df and the gradient g written into the given buffers."""
            e = torch.zeros(B, device=x.device, dtype=x.dtype)
            for l in range(L - 1):
                self._act(xs[l], f[l], df[l])
            eps = [None] * L
            for l in range(1, L):  # eps_l = x_l - (W_l f(x_{l-1}) + b_l); the last is the sensory
                target = xs[l] if l < L - 1 else x
                eps[l] = linear(f[l - 1], W[l - 1], b[l - 1]).neg_().add_(target)
                if l == L - 1 and known is not None:
                    eps[l].mul_(known)
                e.add_(torch.linalg.vector_norm(eps[l], dim=1).square_(), alpha=0.5 * pi[l])
            if _has_prior(pi[0]):
                e.add_(self._prior_energy(xs[0], pi[0]))
            for l in range(L - 1):  # dE/dx_l = pi_l eps_l - f'(x_l) * pi_{l+1} eps_{l+1} W_{l+1}
                torch.mul(linear(eps[l + 1], Wt[l]), df[l], out=g[l]).mul_(-pi[l + 1])
                if l >= 1:
                    g[l].add_(eps[l], alpha=pi[l])
                elif _has_prior(pi[0]):
                    g[0].add_((xs[0] - self.prior_mean).mul_(pi[0]))
            return e

        def curvature(p: list[Tensor], df: list[Tensor]) -> Tensor:
            """(B,) p^T J^T Pi J p: E's Gauss-Newton curvature along p."""
            c = torch.zeros(B, device=x.device, dtype=x.dtype)
            if _has_prior(pi[0]):
                c.add_(p[0].square().mul_(pi[0]).sum(1))
            for l in range(1, L):
                r = linear(df[l - 1] * p[l - 1], W[l - 1])
                if l < L - 1:
                    r.neg_().add_(p[l])
                elif known is not None:
                    r.mul_(known)
                c.add_(torch.linalg.vector_norm(r, dim=1).square_(), alpha=pi[l])
            return c

        def dot(a: list[Tensor], c: list[Tensor]) -> Tensor:
            return sum(torch.linalg.vecdot(u, v) for u, v in zip(a, c))

        def per_cue(t, keep: Tensor, b: int):
            """Rows ``keep`` of t when t has one row per cue of a batch of b; else t as it is."""
            return t[keep] if isinstance(t, Tensor) and t.dim() and t.shape[0] == b else t

        # Top-down start, as in ``_relax``: x_0 = prior mean, x_l = mu_l.
        xs = [self.prior_mean.expand(B, -1).clone()]
        for l in range(1, L - 1):
            xs.append(linear(self._f(xs[-1]), W[l - 1], b[l - 1]))
        # f(x) is scratch (the curvature needs only f'), so one buffer serves both states.
        f, df, g, trial, df2, g2 = ([new(n[l]) for l in range(L - 1)] for _ in range(6))
        e = evaluate(xs, f, df, g)
        s = [gl * Pl for gl, Pl in zip(g, P)]
        p = [-v for v in s]
        gs = dot(g, s)
        damp = torch.ones(B, device=x.device, dtype=x.dtype)
        # Rounding of E's terms: a recomputation at the same state may differ by this much.
        tol_e = 32 * torch.finfo(x.dtype).eps * e.abs()
        if trace is not None:
            trace.append(float(e.mean()))
        # The convergence check reads the sensory prediction (one product with the
        # sensory weights per CG_CHECK_EVERY iterations, ~1% of the work) and syncs
        # with the host only then.
        last_out = self._predict(xs) if tol > 0 else None
        # A cue that has settled leaves the batch: its latents go to ``done`` and every
        # per-cue tensor keeps the other rows (``rows``: their places in the caller's
        # batch). So it stops where it would alone, whatever else shares its batch, and
        # the products shrink as cues settle.
        done = [v.clone() for v in xs] if tol > 0 else None
        rows = torch.arange(B, device=x.device)
        e_all = e.clone()  # (B0,) every cue's energy, for the trace
        for it in range(1, steps + 1):
            alpha = col(-dot(g, p) / curvature(p, df).clamp_min(1e-30) * damp)
            for l in range(L - 1):
                torch.addcmul(xs[l], alpha, p[l], out=trial[l])
            e2 = evaluate(trial, f, df2, g2)
            ok = e2 <= e + tol_e  # (B,)
            damp = torch.where(ok, damp.mul(2.0).clamp_max_(1.0), damp.mul(0.5))
            s2 = [gl * Pl for gl, Pl in zip(g2, P)]
            gs2 = dot(g2, s2)
            beta = col(((gs2 - dot(g2, s)) / gs.clamp_min(1e-30)).clamp_min_(0.0))  # Polak-Ribiere+
            p2 = [torch.addcmul(-u, beta, d) for u, d in zip(s2, p)]
            descent = col(dot(g2, p2) < 0)
            okc = col(ok)
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
            if last_out is not None and it % CG_CHECK_EVERY == 0:
                out = self._predict(xs)
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
                rows, x, known = rows[keep], x[keep], per_cue(known, keep, B)
                pi, P = tuple(per_cue(v, keep, B) for v in pi), [per_cue(v, keep, B) for v in P]
                for buf in (xs, f, df, g, trial, df2, g2, s, p):
                    buf[:] = [t[keep] for t in buf]
                gs, damp, e, tol_e, last_out = (t[keep] for t in (gs, damp, e, tol_e, last_out))
                B = len(keep)
        if done is None:
            return xs
        for l in range(L - 1):
            done[l].index_copy_(0, rows, xs[l])
        return done

    def _prior_energy(self, x0: Tensor, pi0: float | Tensor) -> Tensor:
        """(B,) pi_0 / 2 ||x_0 - m||^2, pi_0 a float or per cue (B, 1)."""
        return (x0 - self.prior_mean).square_().mul_(pi0).sum(1).mul_(0.5)

    def _f(self, x: Tensor) -> Tensor:
        out, scratch = torch.empty_like(x), torch.empty_like(x)
        self._act(x, out, scratch)
        return out

    def _predict(self, xs: list[Tensor]) -> Tensor:
        """(B, D) the sensory prediction mu_{L-1} from the relaxed latents."""
        return linear(self._f(xs[-1]), self.weights[-1], self.biases[-1])

    def _energy_from(self, xs, f, eps, x, known, pi) -> Tensor:
        """(B,) E at the current state (f and eps of the free layers already computed)."""
        ex = x - linear(f[-1], self.weights[-1], self.biases[-1])
        if known is not None:
            ex = ex * known
        return self._energy_of([*eps[1:], ex], xs[0], pi)

    def _energy_of(self, errs: list[Tensor], x0: Tensor, pi: tuple[float, ...]) -> Tensor:
        """(B,) E = sum_l pi_l / 2 ||eps_l||^2 (+ the top prior's term) from the errors
        eps_1 .. eps_{L-1} ((B, n_l) each) and the top latent x0 (B, n_0)."""
        e = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        for l, err in enumerate(errs, start=1):
            e += 0.5 * pi[l] * err.square().sum(1)
        if _has_prior(pi[0]):
            e += self._prior_energy(x0, pi[0])
        return e

    def _errors(self, xs: list[Tensor], x: Tensor, known: Tensor | None) -> tuple[list[Tensor], list[Tensor]]:
        """Activations f(x_l) of the free layers and errors eps_1 .. eps_{L-1} at a state."""
        fs = [self._f(v) for v in xs]
        errs = []
        for l in range(1, len(self.sizes)):
            target = xs[l] if l < len(self.sizes) - 1 else x
            e = target - linear(fs[l - 1], self.weights[l - 1], self.biases[l - 1])
            if l == len(self.sizes) - 1 and known is not None:
                e = e * known
            errs.append(e)
        return fs, errs

    # --- storing ---------------------------------------------------------------------
    def _prepare(self, x: Tensor, name: str) -> Tensor:
        return check_batch(x, self.dim, name).to(self.device, self.dtype)

    def _weight_grads(self, xs: list[Tensor], x: Tensor) -> tuple[float, list[Tensor]]:
        """The local learning rule at a relaxed state, as gradients of the batch-mean energy.

        dE/dW_l = -pi_l eps_l^T f(x_{l-1}) / B and dE/db_l = -pi_l sum(eps_l) / B: each
        weight sees only its two ends (a presynaptic activity and a postsynaptic error).

        Returns:
            (summed energy of the batch, [dW_1, db_1, ..., dW_{L-1}, db_{L-1}, d prior_mean]).
        """
        pi, B = self.config.pi, x.shape[0]
        fs, errs = self._errors(xs, x, None)
        energy = sum(0.5 * pi[l + 1] * float(e.square().sum()) for l, e in enumerate(errs))
        grads = []
        for l, e in enumerate(errs):
            # e^T f as linear(e^T, f^T): oneDNN reads both as rows (the copies are (n, B), small)
            grads.append(linear(e.T.contiguous(), fs[l].T.contiguous()).mul_(-pi[l + 1] / B))
            grads.append(e.sum(0).mul_(-pi[l + 1] / B))
        d = xs[0] - self.prior_mean
        energy += 0.5 * pi[0] * float(d.square().sum())
        grads.append(d.sum(0).mul_(-pi[0] / B))
        return energy, grads

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        """Adam over ``parameters()``; its fused kernel where torch has one (CPU, CUDA):
        one pass over each weight instead of a dozen (measured on this CPU, one thread:
        1.7 ms against 15 ms a step for sizes (256, 1024, 3072); a minibatch of 64 trains
        in ~60 instead of ~67 ms). Same update, float rounding aside; deterministic."""
        fused = self.device.type in ("cpu", "cuda") or None
        return torch.optim.Adam(self.parameters(), lr=lr, fused=fused)

    @torch.no_grad()
    def _train_batch(self, x: Tensor) -> float:
        """Relax on a minibatch (B, D), take one local weight step; returns the summed energy."""
        cfg = self.config
        xs = self._relax(x, None, cfg.train_steps, cfg.infer_lr, cfg.pi, warm=True)
        energy, grads = self._weight_grads(xs, x)
        for p, g in zip(self.parameters(), grads):
            p.grad = g
        if cfg.prior_precision == 0:
            self.prior_mean.grad = None  # no prior: the mean stays 0
        self._opt.step()
        return energy

    def fit(
        self,
        patterns: Tensor,
        epochs: int | None = None,
        progress: bool = True,
        callback: Callable[[dict], bool | None] | None = None,
    ) -> FitHistory:
        """Store patterns by inference learning; resumes from the current weights.

        Arguments:
            patterns: (N, D) float (images in [0, 1]).
            epochs: passes over the patterns (default ``config.epochs``); fewer when the
                energy reaches ``config.stop_energy`` or ``callback`` returns False.
            progress: show a tqdm bar.
            callback: called after every epoch with {"epoch", "epochs", "energy"}
                (epoch counts from 1); returning False stops training.

        Returns:
            a ``FitHistory`` (list-like per-epoch energies, and why it stopped).
        """
        from tqdm.auto import tqdm

        cfg = self.config
        patterns = self._prepare(patterns, "patterns")
        epochs = cfg.epochs if epochs is None else int(epochs)
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable (dict) -> bool | None")
        if self.trained_count == 0 and self._epochs_done == 0:
            # The sensory bias starts at the patterns' mean: the latents then only
            # have to explain each pattern's difference from it.
            self.biases[-1].copy_(patterns.mean(0))
        if self._opt is None:
            self._opt = self._optimizer(cfg.weight_lr)
        self._power.clear()  # each call estimates ||W_l|| afresh, then warm: deterministic per call
        self._recall_cache = None  # the weights are about to change: free what recall kept
        history, start = FitHistory(), time.perf_counter()
        N = patterns.shape[0]
        batch = cfg.batch_size or min(64, max(8, N // 4))
        bar = tqdm(range(epochs), desc="pc fit", unit="epoch", disable=not progress, leave=False)
        # The weight rate follows a cosine from weight_lr to weight_lr * lr_floor over each
        # of the call's cycles (epochs [bounds[k], bounds[k + 1])); once the energy is low
        # enough in the last, a shorter cosine from the current rate to the floor over the
        # annealing tail (first epoch, length, starting rate).
        cycles = min(cfg.cycles, max(1, epochs))
        bounds = [round(k * epochs / cycles) for k in range(cycles + 1)]
        tail: tuple[int, int, float] | None = None
        rate, cycle, floor = cfg.weight_lr, 0, cfg.weight_lr * cfg.lr_floor
        for epoch in bar:
            while epoch >= bounds[cycle + 1]:
                cycle += 1
                if cfg.restart_adam:
                    self._opt = self._optimizer(cfg.weight_lr)
            if tail is None:
                span = bounds[cycle + 1] - bounds[cycle]
                rate = cfg.weight_lr * (cfg.lr_floor + (1.0 - cfg.lr_floor) * _cosine(epoch - bounds[cycle], span))
            else:
                rate = floor + (tail[2] - floor) * _cosine(epoch - tail[0] + 1, tail[1] + 1)
            for group in self._opt.param_groups:
                group["lr"] = rate
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self._epochs_done)
            order = torch.randperm(N, generator=gen).to(self.device)
            total = 0.0
            for i in range(0, N, batch):
                total += self._train_batch(patterns[order[i : i + batch]])
            self._epochs_done += 1
            energy = total / N
            history.energies.append(energy)
            self.trained_count = N
            bar.set_postfix(energy=f"{energy:.4g}")
            if not math.isfinite(energy):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (energy {energy}); "
                                         "lower infer_lr or weight_lr")
            if callback is not None and callback({"epoch": epoch + 1, "epochs": epochs, "energy": energy}) is False:
                history.stopped = "callback"
                break
            if tail is not None:
                if epoch - tail[0] + 1 >= tail[1]:
                    history.stopped = "energy"
                    break
            elif cycle == cycles - 1 and energy / self.dim <= cfg.stop_energy:
                length = min(cfg.stop_anneal, epochs - epoch - 1)
                if length == 0 or rate <= floor:  # nothing left to settle
                    history.stopped = "energy"
                    break
                tail = (epoch + 1, length, rate)
        bar.close()
        with torch.no_grad():  # for the noisy cues' prior (recall_pi): one relaxation of the set
            self.code_precision = self._code_precision(patterns)
        history.seconds = time.perf_counter() - start
        return history

    # --- recall ----------------------------------------------------------------------
    def _check_trained(self) -> None:
        if not self.is_trained:
            raise EmptyMemoryError("this PC memory is untrained: call fit(patterns) before recalling")

    def _chunks(self, *tensors: Tensor | None) -> Iterator[tuple]:
        size = self.config.max_batch
        for i in range(0, tensors[0].shape[0], size):
            yield tuple(None if t is None else t[i : i + size] for t in tensors)

    @torch.no_grad()
    def retrieve(self, cue: Tensor, mask: Tensor | None = None) -> Tensor:
        """Recall stored patterns from corrupted cues.

        Arguments:
            cue: (B, D) float.
            mask: (B, D) bool, True = known entry. None: the whole cue is a noisy
                version of a pattern (iterated recall F). Given: the known entries are
                clamped and the rest inferred; they come back exactly as given.

        Returns:
            (B, D) the network's output, on the model's device.
        """
        self._check_trained()
        cue = self._prepare(cue, "cue")
        if mask is not None:
            mask = check_mask(mask, cue.shape).to(self.device)
        return torch.cat([self._complete(c, m) if m is not None else self._denoise(c)
                          for c, m in self._chunks(cue, mask)])

    def _denoise(self, cue: Tensor, reuse: bool = True) -> Tensor:
        """Iterated recall F for noisy cues (B, D): relax, replace the cue by the prediction.

        Per cue: a cue whose output moved by at most ``recall_tol`` (mean squared) in a
        round has settled and leaves the batch, so how many rounds it gets does not depend
        on the other cues of its batch (the service batches concurrent requests). With one
        batch-wide stop a mildly noisy cue ran on with strongly noisy ones and came back up
        to 2.6e-3 (max abs) from its answer alone (README). ``reuse``: see ``_relax`` (False
        only for the benchmark's baseline).
        """
        cfg = self.config
        current = cue.clone()  # (B, D) each cue's latest output
        active = torch.arange(cue.shape[0], device=cue.device)  # rows still moving
        for _ in range(cfg.recall_iters):
            sub = current if len(active) == len(current) else current[active]
            xs = self._relax(sub, None, cfg.recall_steps, cfg.infer_lr, self.recall_pi, reuse=reuse)
            out = self._predict(xs)
            moving = (out - sub).square().mean(1) > cfg.recall_tol  # (b,)
            current[active] = out
            active = active[moving]
            if len(active) == 0:
                break
        return current

    def _complete(self, cue: Tensor, mask: Tensor) -> Tensor:
        cfg = self.config
        known = mask.to(cue.dtype)
        clamped = cue * known  # unknown entries are never read; zero them anyway
        xs = self._relax_partial(clamped, known, self._partial_pi(cfg.complete_pi, known))
        return torch.where(mask, cue, self._predict(xs))

    @staticmethod
    def _partial_pi(pi: tuple[float, ...], known: Tensor) -> tuple:
        """Recall precisions for partial cues: the top prior's pi_0 scaled, per cue, by the
        fraction of entries known ((B, 1)), so the prior weighs against the evidence as it
        does for a whole cue. A fixed pi_0 outweighs a cue with few known entries: 32
        patches, 1/8 of the rows given: 100% correct without a prior, 69% with a fixed
        0.03, 100% with 0.03 scaled (README)."""
        if not pi[0] > 0:
            return pi
        return (known.mean(1, keepdim=True).mul_(pi[0]), *pi[1:])

    def _relax_partial(self, x: Tensor, known: Tensor, pi: tuple[float, ...]) -> list[Tensor]:
        """The latents for a partial cue (B, D), known (B, D) 1.0 / 0.0, by ``complete_method``."""
        cfg = self.config
        if cfg.complete_method == "cg":
            return self._relax_cg(x, known, cfg.complete_steps, pi, tol=cfg.complete_tol)
        return self._relax(x, known, cfg.complete_steps, cfg.complete_lr, pi, momentum=cfg.complete_momentum,
                           reuse=True)

    @torch.no_grad()
    def energy(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B,) the energy of states x after relaxing the latents: low = familiar.

        Arguments:
            x: (B, D) cues (clamped).
            mask: (B, D) bool, True = known; unknown entries are free (add no energy).
        """
        self._check_trained()
        x = self._prepare(x, "x")
        if mask is not None:
            mask = check_mask(mask, x.shape).to(self.device)
        cfg = self.config
        out = []
        for c, m in self._chunks(x, mask):
            known = None if m is None else m.to(c.dtype)
            if known is None:
                # The config's prior, not the one scaled to the codes: that one's term grows
                # with a code's size, and stored patterns stopped being less energetic than
                # unseen ones (suite's 32 patches: max 1.85 against min 1.22; README).
                pi_c = cfg.recall_pi
                xs = self._relax(c, None, cfg.recall_steps, cfg.infer_lr, pi_c, reuse=True)
            else:
                pi_c = self._partial_pi(cfg.complete_pi, known)
                xs = self._relax_partial(c * known, known, pi_c)
            _, errs = self._errors(xs, c, known)
            out.append(self._energy_of(errs, xs[0], pi_c))
        return torch.cat(out)

    # --- hooks for memory_core.pc_index (issue 27; the index keeps no state in here) ------
    @torch.no_grad()
    def infer_latents(self, x: Tensor, mask: Tensor | None = None, purpose: str = "recall") -> list[Tensor]:
        """The relaxed latents [x_0 (B, n_0), ..., x_{L-2} (B, n_{L-2})] for states x (B, D).

        ``purpose="recall"``: as one round of noisy recall (mask None: ``recall_pi``,
        ``recall_steps``) or as completion relaxes a partial cue (mask (B, D) bool, True =
        known). ``purpose="code"``: a stored pattern clamped with training's precisions
        (its code, what training's inference settles to)."""
        cfg = self.config
        if purpose == "code":
            return self._relax(x, None, cfg.recall_steps, cfg.infer_lr, cfg.pi)
        if purpose != "recall":
            raise ValueError(f"purpose must be 'recall' or 'code', got {purpose!r}")
        if mask is None:
            return self._relax(x, None, cfg.recall_steps, cfg.infer_lr, self.recall_pi, reuse=True)
        known = mask.to(x.dtype)
        return self._relax_partial(x * known, known, self._partial_pi(cfg.complete_pi, known))

    def predict_sensory(self, latents: list[Tensor]) -> Tensor:
        """(B, D) the sensory prediction mu_{L-1} = W f(x_{L-2}) + b from latents."""
        return self._predict(latents)

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors checkpoint (weights, and Adam's moments once the model has
        trained: three times the weights' bytes) with the JSON config in its metadata,
        atomically: a temp file in the same folder, fsync, rename, fsync the folder.

        A loaded checkpoint resumes ``fit`` exactly as the saved model would have. Without
        the moments a resumed fit starts Adam afresh: resuming 50 64x64 patches that way,
        stopped early without ``stop_anneal``, completed 46% of quarter images against
        94% with the moments carried over (README)."""
        from safetensors.torch import save as st_save

        path = Path(path)
        # Adam's moments too, so a loaded model trains on as this one would
        named = dict(zip(self._parameter_names(), self.parameters())) | self._adam_tensors()
        tensors = {k: t.detach().to("cpu").contiguous() for k, t in named.items()}
        meta = {
            "format": _FORMAT,
            "config": self.config.to_json(),
            "trained_count": str(self.trained_count),
            "epochs_done": str(self._epochs_done),
            **({} if self.code_precision is None else {"code_precision": repr(self.code_precision)}),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        data = st_save(tensors, metadata=meta)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> PCMemory:
        """Read a checkpoint written by ``save``; raises ValueError for a file that is not one."""
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        raw = Path(path).read_bytes()
        try:
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
        except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a PC memory checkpoint ({exc})") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a PC memory checkpoint (format {meta.get('format')!r})")
        config = PCConfig.from_dict(json.loads(meta["config"]))
        dtype = getattr(torch, meta.get("dtype", "float32"))
        pc = cls(config.sizes, config.activation, device="cpu", seed=config.seed, config=config, dtype=dtype)
        names = pc._parameter_names()
        known = set(names) | {f"adam.{n}.{k}" for n in names for k in ("m", "v", "step")}
        missing, unknown = sorted(set(names) - set(tensors)), sorted(set(tensors) - known)
        if missing:
            raise ValueError(f"{path}: checkpoint lacks tensors {missing}")
        if unknown:  # e.g. a newer format's state: refused rather than silently dropped
            raise ValueError(f"{path}: checkpoint has tensors this version does not know: {unknown}")
        for name, want in zip(names, pc.parameters()):
            shapes = {name: tensors[name].shape}
            parts = [f"adam.{name}.{k}" in tensors for k in ("m", "v", "step")]
            if any(parts) and not all(parts):
                raise ValueError(f"{path}: checkpoint has part of Adam's state for {name}")
            if all(parts):
                shapes |= {f"adam.{name}.{k}": tensors[f"adam.{name}.{k}"].shape for k in ("m", "v")}
            for key, shape in shapes.items():
                if shape != want.shape:
                    raise ValueError(f"{path}: {key} has shape {tuple(shape)}, the config needs {tuple(want.shape)}")
        pc.weights = [tensors[f"W{l}"].to(dtype) for l in range(1, len(config.sizes))]
        pc.biases = [tensors[f"b{l}"].to(dtype) for l in range(1, len(config.sizes))]
        pc.prior_mean = tensors["prior_mean"].to(dtype)
        adam = {k: v for k, v in tensors.items() if k.startswith("adam.")}
        pc.trained_count = int(meta.get("trained_count", "0"))
        pc._epochs_done = int(meta.get("epochs_done", "0"))
        if "code_precision" in meta:  # not in checkpoints written before it was kept
            pc.code_precision = float(meta["code_precision"])
        pc.to(device)
        pc._restore_adam(adam)  # checkpoints written before Adam's state was saved have none
        return pc
