"""``PCConfig``: every hyperparameter of a ``PCMemory``, and the defaults of recall.

The evidence for each default (what was measured, on which data, with which command)
is in results/pc_defaults.md; the docstrings here state what a field does and why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .energy import ACTIVATIONS

__all__ = [
    "COMPLETE_TOP_PRIOR",
    "RECALL_HIDDEN_GAIN",
    "RECALL_PRIOR_PER_CODE_PRECISION",
    "RECALL_TOP_PRIOR",
    "PCConfig",
]

# Recall's precision of the hidden layers relative to training's (PCConfig.recall_precisions):
# a recall that trusts the learned prior more than the cue keeps a hidden layer wider than
# the stored set from passing a cue's noise through (results/pc_defaults.md#hidden-gain).
RECALL_HIDDEN_GAIN = 3.0
# Precisions of a zero-mean Gaussian prior on the top latent in recall when training had
# none (training relaxes every pattern from a zero top latent, so the stored codes lie
# near 0): among latents that explain a cue almost equally well it picks the one nearest
# the codes. Partial cues' known entries are exact, so their prior weighs less than noisy
# cues' (results/pc_defaults.md#top-prior).
COMPLETE_TOP_PRIOR = 0.03
RECALL_TOP_PRIOR = 0.1
# The noisy cues' prior scaled to the stored codes (PCMemory.recall_pi): pi_0 = this times
# the codes' precision 1 / mean(z^2), because the best fixed pi_0 grows with how tightly
# the codes sit around 0 (results/pc_defaults.md#scaled-prior). RECALL_TOP_PRIOR stays for
# models fit before the codes were measured.
RECALL_PRIOR_PER_CODE_PRECISION = 0.005


# Upper bounds of the rates, scales and precisions, orders of magnitude past their useful
# values (results/pc_defaults.md): beyond them relaxation or training can only diverge.
_MAX_PRECISION = 1e6
_CEILINGS = {
    "infer_lr": 10.0,
    "complete_lr": 10.0,
    "weight_lr": 1.0,
    "lr_floor": 1.0,
    "sensory_init": 100.0,
    "prior_precision": _MAX_PRECISION,
    "recall_prior_precision": _MAX_PRECISION,
    "complete_prior_precision": _MAX_PRECISION,
}


@dataclass(frozen=True)
class PCConfig:
    """Every hyperparameter of a ``PCMemory`` (what its checkpoint's JSON holds).

    The defaults store a set well enough for recall when ``fit`` is called alone
    (results/pc_defaults.md).

    Attributes:
        sizes: layer widths from the top latent to the sensory layer, e.g. (256, 512, 3072).
        activation: f, one of ``ACTIVATIONS``.
        seed: initial weights and minibatch order.
        sensory_init: scale of the initial sensory weights relative to 1/sqrt(fan-in);
            tiny, because with the usual scale noise outside the stored patterns' span
            passes straight through recall.
        precisions: pi_1 .. pi_{L-1}, one per predicted layer (top to bottom); None = 1.
        prior_precision: pi_0 of a learned prior mean on the top latent; 0 = no prior.
        epochs: passes over the patterns in ``fit`` (at most; see ``stop_energy``).
        batch_size: patterns per weight step; None = N // 4 clipped to [8, 64] (small
            batches store a few patterns best, larger ones amortise the work of many).
        train_steps: relaxation steps per minibatch before its weight step (T).
        infer_lr: relaxation step size in units of 1 / L_l, each layer's curvature bound
            (``relax.step_sizes``): plain steps descend for values up to about 1-2.
        momentum: heavy-ball momentum of the relaxation (a step that raises a cue's
            energy is undone and its momentum dropped, so E never rises).
        weight_lr: Adam learning rate of the weights at the start of a ``fit`` call; it
            decays along a cosine to ``weight_lr * lr_floor`` at the call's last epoch
            (a constant rate made the energy climb again late in training).
        lr_floor: the last epoch's fraction of ``weight_lr``.
        cycles: cosine cycles the call's epochs are split into: the rate restarts at
            ``weight_lr`` at the start of each (warm restarts); ``stop_energy`` is
            checked in the last only. More cycles complete partial cues better but pass
            more of a noisy cue's noise, so the default is 1
            (results/pc_defaults.md#warm-restarts).
        restart_adam: start Adam afresh (zero moments) at each cycle's restart, as a
            second ``fit`` call on a checkpoint without Adam's state does; off, the
            moments carry over. It fits the stored set closer still: the same trade as
            ``cycles``, steeper, so it is off by default.
        stop_energy: ``fit`` stops once an epoch's mean energy per pattern, divided by
            the pattern dimension, is at most this (after ``stop_anneal`` epochs).
        stop_anneal: epochs over which ``fit``, once ``stop_energy`` is reached, lowers
            the weight learning rate from where it is to the floor before stopping
            (fewer when the call's epochs run out first; 0 stops at once): weights left
            at a high rate are unsettled (results/pc_defaults.md#annealing-tail).
        recall_iters: at most this many rounds of F for a noisy cue (with a top prior
            each round pulls the code further towards the prior's mean).
        recall_steps: relaxation steps per round of F (and for ``energy``).
        recall_tol: F stops for a cue once its output moves by at most this (mean squared).
        recall_precisions: pi_1 .. pi_{L-1} used in recall and ``energy``. None: the
            training precisions with every hidden layer's raised ``RECALL_HIDDEN_GAIN``
            times; ``precisions`` itself restores equal trust.
        recall_prior_precision: pi_0 of a zero-mean Gaussian prior on the top latent in
            the recall of whole (noisy) cues and their ``energy``. None: the training
            prior's precision when there is one (around its learned mean), else
            ``RECALL_TOP_PRIOR``, which the recall of noisy cues (not ``energy``) scales
            to the stored codes (``PCMemory.recall_pi``). 0 turns it off.
        complete_prior_precision: the same for partial cues (completion and masked
            ``energy``), scaled per cue by the fraction of entries known. None: the
            training prior's precision when there is one, else ``COMPLETE_TOP_PRIOR``.
            0 turns it off.
        complete_method: the relaxation for a partial cue. "cg" (default): nonlinear
            conjugate gradients with Gauss-Newton step lengths
            (``relax.conjugate_gradients``), which converge on a partial cue's
            ill-conditioned energy in hundreds of iterations where heavy-ball momentum
            needs tens of thousands. "momentum": the relaxation of training and noisy
            recall with ``complete_lr`` and ``complete_momentum``.
        complete_steps: iterations for a partial cue (at most, with "cg").
        complete_tol: "cg" stops a cue once its output has moved by at most this (mean
            squared over the D entries) in ``relax.CG_CHECK_EVERY`` iterations, and the
            batch once every cue has stopped; 0 runs all ``complete_steps``.
        complete_lr: step size for a partial cue with "momentum" (units as ``infer_lr``,
            the bound from the known entries alone).
        complete_momentum: momentum for a partial cue with "momentum" (a pure,
            ill-conditioned descent: more momentum converges faster than training's).
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
            self._check_precisions(name, len(sizes) - 1)
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
        self._check_ranges()

    def _check_precisions(self, name: str, count: int) -> None:
        value = getattr(self, name)
        if value is None:
            return
        value = tuple(float(p) for p in value)
        object.__setattr__(self, name, value)
        if len(value) != count or min(value) <= 0:
            raise ValueError(f"{name} needs {count} positive values (one per predicted layer), got {value}")

    def _check_ranges(self) -> None:
        positive = ("epochs", "cycles", "recall_iters", "max_batch", "infer_lr", "weight_lr", "complete_lr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in (
            "train_steps",
            "recall_steps",
            "complete_steps",
            "sensory_init",
            "prior_precision",
            "stop_energy",
            "stop_anneal",
            "recall_tol",
            "lr_floor",
            "complete_tol",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("momentum", "complete_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name, top in _CEILINGS.items():  # far past any useful value: a rate there only diverges
            value = getattr(self, name)
            if value is not None and not value <= top:
                raise ValueError(f"{name} must be at most {top:g}, got {value!r}")
        for name in ("precisions", "recall_precisions"):
            if getattr(self, name) is not None and not max(getattr(self, name)) <= _MAX_PRECISION:
                raise ValueError(f"{name} must be at most {_MAX_PRECISION:g} each, got {getattr(self, name)}")
        # Generators are seeded with seed * 1_000_003 + epochs done, which must fit torch's 64 bits.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2^32), got {self.seed!r}")

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
        return (
            self._recall_prior(self.complete_prior_precision, COMPLETE_TOP_PRIOR),
            *self._recall_layer_pi(),
        )

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
