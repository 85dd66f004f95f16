"""Filtered link prediction (Bordes et al. 2013), the standard knowledge-base completion test.

Each test fact is asked once per argument position: the true entity is ranked among all
entities in that position, after the candidates that complete another known fact (train,
valid or test) are filtered out. Ties count as their mean position (the "realistic" rank,
PyKEEN's default), so a constant scorer gets rank (E + 1) / 2, not 1. Reported: MRR (mean
of 1 / rank), Hits@1, @3, @10 (share of ranks <= k) and the mean rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .facts import FactIndex

__all__ = ["ScoreFn", "filtered_ranks", "rank_metrics"]

# (relations (B,), args (B, A) long, position) -> (B, E): every entity's score in that position
ScoreFn = Callable[[Tensor, Tensor, int], Tensor]


@torch.no_grad()
def filtered_ranks(
    score: ScoreFn, rows: Tensor, arity: Tensor, known: FactIndex, num_entities: int, batch_size: int = 256
) -> Tensor:
    """Filtered ranks of each fact's true entity at each of its argument positions.

    Arguments:
        score: scores all entities for one position of a batch of facts (higher = truer).
        rows: (N, 1 + A) int64 fact rows ``[r, e_1, .., e_A]`` padded with -1.
        arity: (N,) each fact's arity.
        known: the facts to filter out (must include ``rows`` themselves).
        num_entities: E.
        batch_size: facts scored at once.

    Returns:
        (sum of arities,) float64 ranks in 1..E, position by position.
    """
    ranks = []
    for p in range(rows.shape[1] - 1):
        chosen = rows[arity > p]
        for i in range(0, len(chosen), batch_size):
            part = chosen[i : i + batch_size]
            rel, args = part[:, 0], part[:, 1:]
            n = arity[arity > p][i : i + batch_size]
            scores = score(rel, args, p).detach().to("cpu", torch.float64)  # (B, E)
            truth = args[:, p].cpu()
            true_score = scores.gather(1, truth.unsqueeze(1))  # (B, 1)
            other_known = known.mask(rel.cpu(), args.cpu(), n.cpu(), p, num_entities)
            other_known[torch.arange(len(truth)), truth] = False
            scores.masked_fill_(other_known, -torch.inf)
            better = (scores > true_score).sum(1)
            not_worse = (scores >= true_score).sum(1)  # counts the true entity itself
            ranks.append((better + 1 + not_worse).to(torch.float64) / 2)
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.float64)


def rank_metrics(ranks: Tensor) -> dict[str, float]:
    """MRR, Hits@1, @3, @10 and mean rank of filtered ranks (``filtered_ranks``)."""
    if ranks.numel() == 0:
        raise ValueError("no ranks: the test set is empty")
    ranks = ranks.to(torch.float64)
    out = {"mrr": float((1.0 / ranks).mean())}
    for k in (1, 3, 10):
        out[f"hits@{k}"] = float((ranks <= k).to(torch.float64).mean())
    out["mean_rank"] = float(ranks.mean())
    out["count"] = int(ranks.numel())
    return out
