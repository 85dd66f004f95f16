"""BoxE's geometry: boxes from their parameters, the point-to-box distance, fact scores.

Pure functions on tensors, in the notation of Abboud et al. (NeurIPS 2020, section 3):
a box is ``(low, high)`` per dimension; ``w = high - low + 1`` is its width plus one;

    dist(e, b) = |e - c| / w                                       if low <= e <= high
    dist(e, b) = |e - c| * w - (w - 1) / 2 * (w - 1 / w)           otherwise

(``c`` the box's centre), continuous at the box's faces, shallow inside and steep outside
so that points are pulled into boxes and, inside, towards the centre. A fact
``r(e_1, ..., e_n)`` scores ``-sum_i ||dist(e_i^{r(e_1..e_n)}, b_i^r)||_p``, where
``e_i^{r(...)}`` is the argument's base position plus the bumps of the fact's other
arguments, optionally through tanh (points and boxes alike, so the space is bounded).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_bounds", "fact_scores", "point_box_distance", "product_normalise", "scale_from_raw"]

_EPS = 1e-8


def product_normalise(shape: Tensor) -> Tensor:
    """(..., d) -> (..., d) divided by the geometric mean of its absolute values.

    The result's absolute values multiply to 1 along the last axis: a box's shape
    carries its proportions only, its size lives in the separate scale (as in the paper
    and its reference code, ``log(|x| + eps)`` keeps zeros finite).
    """
    log_abs = shape.abs().add(_EPS).log()  # (..., d)
    return shape / log_abs.mean(-1, keepdim=True).exp()


def scale_from_raw(raw_scale: Tensor) -> Tensor:
    """A box's positive size multiplier: ``elu(raw) + 1`` (the reference code's choice)."""
    return torch.nn.functional.elu(raw_scale) + 1.0


def box_bounds(centre: Tensor, shape: Tensor, raw_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Corners of boxes given by centre, shape and scale.

    Arguments:
        centre: (..., d) box centres.
        shape: (..., d) unnormalised shapes (only their proportions matter).
        raw_scale: (...) one unconstrained scale per box.

    Returns:
        (low, high), each (..., d): ``centre -/+ 0.5 * scale * |normalised shape|``.
    """
    half = 0.5 * scale_from_raw(raw_scale).unsqueeze(-1) * product_normalise(shape).abs()  # (..., d)
    return centre - half, centre + half


def point_box_distance(points: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The paper's elementwise distance of points to boxes; all arguments broadcast.

    Arguments:
        points: (..., d).
        low, high: (..., d) box corners, ``low <= high``.

    Returns:
        (..., d) non-negative distances (equal on both sides of a face).
    """
    # The two cases in one expression, without computing both and selecting (fewer passes
    # over these large tensors, forward and backward): with h = (w - 1) / 2 the half-width,
    #   |e - c| / w + relu(|e - c| - h) * (w - 1 / w)
    # is |e - c| / w inside, and |e - c| * w - h * (w - 1 / w) = |e - c| * w - kappa outside.
    width = high - low + 1.0  # the paper's w: width plus one, >= 1
    inv = 1.0 / width
    offset = (points - 0.5 * (low + high)).abs()  # |e - c|
    return offset * inv + torch.relu(offset - 0.5 * (high - low)) * (width - inv)


def fact_scores(points: Tensor, low: Tensor, high: Tensor, mask: Tensor | None, p: int, tanh: bool) -> Tensor:
    """Scores of facts from their arguments' final embeddings and their relation's boxes.

    Arguments:
        points: (..., A, d) each argument's base position plus the other arguments' bumps.
        low, high: (..., A, d) the relation's box for each argument position.
        mask: (..., A) bool, True for the positions a fact uses (its arity), or None.
        p: the norm's order over the d dimensions (1 or 2).
        tanh: map points and boxes through tanh first (the paper's bounded space).

    Returns:
        (...) ``-sum_i ||dist_i||_p`` over the positions in use: 0 is best.
    """
    if tanh:
        points, low, high = points.tanh(), low.tanh(), high.tanh()
    per_position = torch.linalg.vector_norm(point_box_distance(points, low, high), ord=p, dim=-1)  # (..., A)
    if mask is not None:
        per_position = per_position * mask
    return -per_position.sum(-1)
