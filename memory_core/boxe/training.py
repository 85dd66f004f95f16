"""Training BoxE: self-adversarial negative sampling with a margin (Sun et al. 2019), as in
the paper (section 6) and its reference code.

For each true fact, ``negatives`` corrupted facts replace one argument, at a position
drawn uniformly among the fact's arity, with another entity drawn uniformly (never the
original; not filtered, as in the reference code and PyKEEN). With scores s (= -distance),
margin gamma and temperature alpha, a batch's loss is the sum over its facts of

    -log sigmoid(gamma + s_pos) - sum_j w_j log sigmoid(-s_neg_j - gamma),
    w = softmax(alpha * s_neg) (held constant: no gradient through the weights),

minimised with Adam. The shuffling and the negatives of epoch t come from a generator
seeded with (seed, t): the same seed and calls give the same model (on CPU bit for bit;
CUDA's scatter-adds may sum in another order).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import interrupt
from ..checks import EmptyMemoryError

BoxE = Any  # the model (model.py imports this module, so this one does not import it)

__all__ = ["FitHistory", "corrupt", "fit", "nssa_loss"]


@dataclass
class FitHistory:
    """What one ``fit`` call did."""

    losses: list[float] = field(default_factory=list)  # mean loss per fact, per finished epoch
    stopped: str = "epochs"  # "epochs", "callback" (it returned False) or "cancelled" (should_stop)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.losses)


def corrupt(args: Tensor, arity: Tensor, num_entities: int, k: int, generator: torch.Generator) -> Tensor:
    """k corrupted copies of each fact.

    Arguments:
        args: (B, A) argument rows, padded with -1 past each arity.
        arity: (B,) arities.
        num_entities: E >= 2.
        k: corruptions per fact.

    Returns:
        (B, k, A): each copy with one argument (position uniform in its arity) replaced by
        another entity (uniform among the E - 1 others).
    """
    B, A = args.shape
    dev = args.device
    position = (torch.rand(B, k, generator=generator, device=dev) * arity.unsqueeze(1)).long()  # (B, k)
    original = args.gather(1, position)
    new = torch.randint(num_entities - 1, (B, k), generator=generator, device=dev)
    new = new + (new >= original).long()  # skip the original entity
    out = args.unsqueeze(1).expand(B, k, A).clone()
    out.scatter_(2, position.unsqueeze(-1), new.unsqueeze(-1))
    return out


def nssa_loss(positive: Tensor, negative: Tensor, margin: float, temperature: float) -> Tensor:
    """Self-adversarial negative-sampling loss, summed over the batch.

    Arguments:
        positive: (B,) scores of true facts.
        negative: (B, k) scores of their corruptions.
    """
    loss = -F.logsigmoid(margin + positive).sum()
    if negative.shape[1]:
        weights = torch.softmax(temperature * negative.detach(), dim=1)
        loss = loss - (weights * F.logsigmoid(-negative - margin)).sum()
    return loss


def _optimizer(model: BoxE) -> torch.optim.Adam:
    for t in model.parameters():
        t.requires_grad_(True)
    if model._opt is None:
        model._opt = torch.optim.Adam(model.parameters(), lr=model.config.lr)
    for group in model._opt.param_groups:
        group["lr"] = model.config.lr
    return model._opt


def fit(
    model: BoxE,
    epochs: int | None = None,
    progress: bool = True,
    callback: Callable[[dict], bool | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitHistory:
    """Train on every stored fact.

    Arguments:
        model: the memory.
        epochs: passes over the facts (default ``config.epochs``).
        progress: show a tqdm bar.
        callback: called after each epoch with {"epoch" (from 1), "epochs", "loss" (mean
            per fact), "seconds" (since the call began), "eta_s" (seconds left at the
            pace so far)}; returning False stops after that epoch.
        should_stop: polled before every batch; True stops at once (cancellation), leaving
            the parameters as the last finished step made them.

    Returns:
        a ``FitHistory``.
    """
    from tqdm.auto import tqdm

    cfg = model.config
    epochs = cfg.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable (dict) -> bool | None")
    if should_stop is not None and not callable(should_stop):
        raise TypeError("should_stop must be callable () -> bool")
    if len(model.facts) == 0:
        raise EmptyMemoryError("this relational memory holds no facts: add_facts before fit")
    dev = model.device
    table = model.facts.table().to(dev)  # (N, 1 + A)
    relations, args = table[:, 0], table[:, 1:]
    arity = model._arity_of(relations)
    N, E = len(table), len(model.entities)
    k = cfg.negatives if E >= 2 else 0  # one entity: nothing to corrupt with
    excluded = model.excluded_rows().to(dev)  # (P, 1 + A) false by the rules: extra negatives
    steps = -(-N // cfg.batch_size)
    share = -(-len(excluded) // steps)  # excluded rows per step
    opt = _optimizer(model)
    history, start = FitHistory(), time.perf_counter()
    bar = tqdm(range(epochs), desc="boxe fit", unit="epoch", disable=not progress, leave=False)
    try:
        for epoch in bar:
            gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1_000_003 + model.epochs_done)
            order = torch.randperm(N, generator=gen, device=dev)
            ex_order = torch.randperm(len(excluded), generator=gen, device=dev)
            total = torch.zeros((), device=dev)
            for step, i in enumerate(range(0, N, cfg.batch_size)):
                interrupt.poll()  # the caller's hook (memory_core.interrupt): may cancel or pause
                if should_stop is not None and should_stop():
                    history.stopped = "cancelled"
                    return history
                batch = order[i : i + cfg.batch_size]
                rel, pos, n = relations[batch], args[batch], arity[batch]
                rows = pos.unsqueeze(1)
                if k:
                    rows = torch.cat([rows, corrupt(pos, n, E, k, gen)], 1)  # (B, 1 + k, A)
                scores = model._score_rows(rel, rows)  # (B, 1 + k)
                loss = nssa_loss(scores[:, 0], scores[:, 1:], cfg.margin, cfg.adversarial_temperature)
                if share:
                    ex = excluded[ex_order[step * share : (step + 1) * share]]
                    ex_scores = model._score_rows(ex[:, 0], ex[:, 1:].unsqueeze(1)).squeeze(1)
                    loss = loss - F.logsigmoid(-ex_scores - cfg.margin).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            model.epochs_done += 1
            mean = float(total) / N
            history.losses.append(mean)
            bar.set_postfix(loss=f"{mean:.4g}")
            if not math.isfinite(mean):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {mean}); lower lr")
            seconds = time.perf_counter() - start
            info = {
                "epoch": epoch + 1,
                "epochs": epochs,
                "loss": mean,
                "seconds": seconds,
                "eta_s": seconds / (epoch + 1) * (epochs - epoch - 1),
            }
            if callback is not None and callback(info) is False:
                history.stopped = "callback"
                break
    finally:
        bar.close()
        for t in model.parameters():
            t.requires_grad_(False)
        history.seconds = time.perf_counter() - start
        if model.epochs_done:
            model.trained_facts = N
    return history
