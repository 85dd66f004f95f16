"""How a ``PCMemory`` stores patterns: ``fit`` by inference learning. Per minibatch the
latents relax with the patterns clamped, then one local weight step (Adam) follows the
learning rule; per epoch a seeded order, the weight rate of ``training.WeightSchedule``,
and the stops (epochs, energy, a callback).

``FitMixin`` is a part of ``PCMemory`` (``memory.py``), kept in a module of its own: it
reads and writes the memory's attributes named in its annotations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from ..interrupt import poll
from ..linalg import linear  # x @ w.T via oneDNN on the CPU
from .config import PCConfig
from .relax import SpectralNorms
from .training import FitHistory, WeightSchedule

__all__ = ["FitMixin"]


class FitMixin:
    """``PCMemory.fit`` and the steps it takes (see ``memory.py``); besides the attributes
    below it calls the memory's ``parameters``, ``_prepare``, ``codes`` and, of
    ``InferenceMixin``, ``_relax`` and ``_state_energy``."""

    config: PCConfig
    sizes: tuple[int, ...]
    dim: int
    device: torch.device
    biases: list[Tensor]
    prior_mean: Tensor
    trained_count: int
    code_precision: float | None
    _opt: torch.optim.Optimizer | None
    _epochs_done: int
    _norms: SpectralNorms
    _recall_cache: tuple | None

    def _weight_grads(self, xs: list[Tensor], x: Tensor) -> tuple[float, list[Tensor]]:
        """The local learning rule at a relaxed state, as gradients of the batch-mean energy.

        dE/dW_l = -pi_l eps_l^T f(x_{l-1}) / B and dE/db_l = -pi_l sum(eps_l) / B: each
        weight sees only its two ends (a presynaptic activity and a postsynaptic error).

        Returns:
            (summed energy of the batch, [dW_1, db_1, ..., dW_{L-1}, db_{L-1}, d prior_mean]).
        """
        pi, B = self.config.pi, x.shape[0]
        e, eps, fs = self._state_energy(xs, x, None, pi)
        grads = []
        for l in range(1, len(self.sizes)):
            # e^T f as linear(e^T, f^T): oneDNN reads both as rows (the copies are (n, B), small)
            grads.append(linear(eps[l].T.contiguous(), fs[l - 1].T.contiguous()).mul_(-pi[l] / B))
            grads.append(eps[l].sum(0).mul_(-pi[l] / B))
        grads.append((xs[0] - self.prior_mean).sum(0).mul_(-pi[0] / B))
        return float(e.sum()), grads

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        """Adam over ``parameters()``; its fused kernel where torch has one (CPU, CUDA): one
        pass over each weight instead of a dozen, the same update up to float rounding."""
        fused = self.device.type in ("cpu", "cuda") or None
        return torch.optim.Adam(self.parameters(), lr=lr, fused=fused)

    @torch.no_grad()
    def _train_batch(self, x: Tensor) -> float:
        """Relax on a minibatch (B, D), take one local weight step; returns the summed energy."""
        cfg = self.config
        xs = self._relax(x, None, cfg.train_steps, cfg.infer_lr, cfg.pi, warm=True)
        energy_sum, grads = self._weight_grads(xs, x)
        for p, g in zip(self.parameters(), grads, strict=True):
            p.grad = g
        if cfg.prior_precision == 0:
            self.prior_mean.grad = None  # no prior: the mean stays 0
        self._opt.step()
        return energy_sum

    def _train_epoch(self, patterns: Tensor, batch: int) -> float:
        """One pass over the patterns (N, D) in a seeded order; returns the mean energy per pattern."""
        N = patterns.shape[0]
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self._epochs_done)
        order = torch.randperm(N, generator=gen).to(self.device)
        total = 0.0
        for i in range(0, N, batch):
            poll()  # a caller may cancel or pause between minibatches (memory_core.interrupt)
            total += self._train_batch(patterns[order[i : i + batch]])
        self._epochs_done += 1
        self.trained_count = N
        return total / N

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
        self._norms.clear()  # each call estimates ||W_l|| afresh, then warm: deterministic per call
        self._recall_cache = None  # the weights are about to change: free what recall kept
        history, start = FitHistory(), time.perf_counter()
        batch = cfg.batch_size or min(64, max(8, patterns.shape[0] // 4))
        schedule = WeightSchedule(cfg, epochs)
        bar = tqdm(range(epochs), desc="pc fit", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            rate, restarted = schedule.rate(epoch)
            if restarted and cfg.restart_adam:
                self._opt = self._optimizer(cfg.weight_lr)
            for group in self._opt.param_groups:
                group["lr"] = rate
            energy_mean = self._train_epoch(patterns, batch)
            history.energies.append(energy_mean)
            bar.set_postfix(energy=f"{energy_mean:.4g}")
            if not math.isfinite(energy_mean):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch + 1} (energy {energy_mean}); "
                    "lower infer_lr or weight_lr"
                )
            if (
                callback is not None
                and callback({"epoch": epoch + 1, "epochs": epochs, "energy": energy_mean}) is False
            ):
                history.stopped = "callback"
                break
            if schedule.should_stop(epoch, energy_mean / self.dim):
                history.stopped = "energy"
                break
        bar.close()
        with torch.no_grad():  # one relaxation of the set: the noisy cues' prior and PCIndex.build
            history.codes = self.codes(patterns)
            self.code_precision = self._code_precision(history.codes[0])
        history.seconds = time.perf_counter() - start
        return history

    def _code_precision(self, top: Tensor) -> float:
        """1 / mean(z^2): how tightly the stored set's top codes z (N, n_0) sit around the top
        prior's mean 0, averaged over the set and the units (summed chunk by chunk)."""
        square_sum = sum(float(z.square().sum()) for z in top.split(self.config.max_batch))
        return top.shape[0] * self.sizes[0] / max(square_sum, 1e-30)
