"""``PCMemory``: a hierarchical predictive-coding associative memory (Salvatori et al.,
"Associative Memories via Predictive Coding", NeurIPS 2021).

The energy and its gradient are ``energy.py``'s, the relaxations ``relax.py``'s; this
module holds the memory: its parameters, recall and checkpoints. Two parts of the class
live in modules of their own: ``inference.py`` (relaxing with the memory's weights) and
``fitting.py`` (storing: ``fit``).

- Storing (``fit``): inference learning. The sensory layer is clamped to a minibatch of
  patterns, the latents start top-down from x_0 = 0 (the same start for every pattern, no
  per-pattern state), ``train_steps`` heavy-ball steps descend E over the latents, then one
  local weight step dW_l ~ pi_l eps_l f(x_{l-1})^T (Adam), and on to the next minibatch.
- Noisy recall: clamp the sensory layer to the cue, relax, replace the cue by the sensory
  prediction mu_{L-1}, repeat (the paper's F) until it stops changing.
- Partial recall: the known entries stay clamped; the unknown sensory entries are free
  values whose energy term is minimised exactly at every step (x_u = mu_u), so the latents
  relax on the known entries' errors alone, by conjugate gradients until the outputs stop
  moving, with a weak zero-mean prior on the top latent settling the directions the known
  entries leave almost free. Known entries come back exactly as given.

Measurements behind the defaults: results/pc_defaults.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import fields, replace

import torch
from torch import Tensor

from ..checks import EmptyMemoryError, check_batch, check_dtype, check_mask, resolve_device
from . import checkpoint
from .config import RECALL_PRIOR_PER_CODE_PRECISION, PCConfig
from .energy import ACTIVATIONS
from .fitting import FitMixin
from .inference import InferenceMixin
from .relax import SpectralNorms
from .training import FitHistory

__all__ = ["FitHistory", "PCMemory"]


class PCMemory(FitMixin, InferenceMixin):
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
            cue's step was halved.
        code_precision: 1 / mean(z^2) of the stored set's top latents, set by ``fit``
            (None before); scales the noisy cues' prior (``recall_pi``).

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
        if isinstance(sizes, PCConfig):  # PCMemory(PCConfig(...)): say where a config goes
            raise TypeError("PCMemory's first argument is sizes; pass a PCConfig as config=PCConfig(...)")
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
        self._norms = SpectralNorms()  # ||W_l||, kept per weight version
        self._recall_cache: tuple | None = None  # see _recall_weights
        self.code_precision: float | None = None
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
        return [t for pair in zip(self.weights, self.biases, strict=True) for t in pair] + [self.prior_mean]

    def named_parameters(self) -> dict[str, Tensor]:
        """``parameters()`` by their checkpoint names: W1, b1, ..., prior_mean (in that order)."""
        names = [n for l in range(1, len(self.sizes)) for n in (f"W{l}", f"b{l}")] + ["prior_mean"]
        return dict(zip(names, self.parameters(), strict=True))

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
        adam = checkpoint.adam_tensors(self._opt, self.named_parameters())
        self.weights = [w.to(self.device) for w in self.weights]
        self.biases = [b.to(self.device) for b in self.biases]
        self.prior_mean = self.prior_mean.to(self.device)
        self._opt = None
        self._recall_cache = None  # it holds the old device's tensors
        if adam:
            self._opt = self._optimizer(self.config.weight_lr)
            checkpoint.restore_adam(self._opt, self.named_parameters(), adam)
        return self

    def __repr__(self) -> str:
        return (
            f"PCMemory(sizes={list(self.sizes)}, activation={self.config.activation!r}, "
            f"device={str(self.device)!r}, trained_count={self.trained_count})"
        )

    # --- input batches (fit, recall) ----------------------------------------------------
    def _prepare(self, x: Tensor, name: str) -> Tensor:
        return check_batch(x, self.dim, name).to(self.device, self.dtype)

    # --- recall ----------------------------------------------------------------------
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
        return torch.cat(
            [self._complete(c, m) if m is not None else self._denoise(c) for c, m in self._chunks(cue, mask)]
        )

    def _denoise(self, cue: Tensor, reuse: bool = True) -> Tensor:
        """Iterated recall F for noisy cues (B, D): relax, replace the cue by the prediction.

        Per cue: a cue whose output moved by at most ``recall_tol`` (mean squared) in a
        round has settled and leaves the batch, so how many rounds it gets does not depend
        on the other cues of its batch (the service batches concurrent requests).
        ``reuse``: see ``_relax`` (False only for the benchmark's baseline).
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
    def _partial_pi(pi: tuple, known: Tensor) -> tuple:
        """Recall precisions for partial cues: the top prior's pi_0 scaled, per cue, by the
        fraction of entries known ((B, 1)), so the prior weighs against the evidence as it
        does for a whole cue (a fixed pi_0 outweighs a cue with few known entries)."""
        if not pi[0] > 0:
            return pi
        return (known.mean(1, keepdim=True).mul_(pi[0]), *pi[1:])

    def _relax_partial(self, x: Tensor, known: Tensor, pi: tuple) -> list[Tensor]:
        """The latents for a partial cue (B, D), known (B, D) 1.0 / 0.0, by ``complete_method``."""
        cfg = self.config
        if cfg.complete_method == "cg":
            return self._relax_cg(x, known, cfg.complete_steps, pi, tol=cfg.complete_tol)
        return self._relax(
            x, known, cfg.complete_steps, cfg.complete_lr, pi, momentum=cfg.complete_momentum, reuse=True
        )

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
                # with a code's size, and stored patterns stopped scoring lower than unseen
                # ones (results/pc_defaults.md#scaled-prior).
                pi_c = cfg.recall_pi
                xs = self._relax(c, None, cfg.recall_steps, cfg.infer_lr, pi_c, reuse=True)
            else:
                pi_c = self._partial_pi(cfg.complete_pi, known)
                xs = self._relax_partial(c * known, known, pi_c)
            out.append(self._state_energy(xs, c, known, pi_c)[0])
        return torch.cat(out)

    # --- hooks for PCIndex (pc/index.py; the index keeps no state in here) ---------------
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

    @torch.no_grad()
    def codes(self, patterns: Tensor) -> list[Tensor]:
        """The latents [(N, n_0), ..., (N, n_{L-2})] training's energy gives stored patterns
        (N, D): ``infer_latents(purpose="code")``, in chunks of ``max_batch``."""
        parts = [
            self.infer_latents(c, purpose="code")
            for (c,) in self._chunks(self._prepare(patterns, "patterns"))
        ]
        return [torch.cat(layer) for layer in zip(*parts, strict=True)]

    def predict_sensory(self, latents: list[Tensor]) -> Tensor:
        """(B, D) the sensory prediction mu_{L-1} = W f(x_{L-2}) + b from latents."""
        return self._predict(latents)

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors checkpoint (weights, and Adam's moments once the model has
        trained: three times the weights' bytes) with the JSON config in its metadata,
        atomically. A loaded checkpoint resumes ``fit`` exactly as this model would."""
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> PCMemory:
        """Read a checkpoint written by ``save``; raises ValueError for a file that is not one."""
        return checkpoint.load(cls, path, device)
