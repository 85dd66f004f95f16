"""BoxE's distance function and fact scores against a direct transcription of the paper's
formulas (Abboud et al. 2020, section 3) on hand-made boxes, and against autograd."""

from __future__ import annotations

import math

import pytest
import torch

from memory_core.boxe import BoxE, box_bounds, fact_scores, point_box_distance, product_normalise


def paper_distance(e: float, low: float, high: float) -> float:
    """dist(e, b) of the paper, one coordinate, as written there: w = u - l + 1,
    kappa = 0.5 (w - 1)(w - 1/w); |e - c| / w inside, |e - c| * w - kappa outside."""
    w = high - low + 1.0
    c = (low + high) / 2.0
    kappa = 0.5 * (w - 1.0) * (w - 1.0 / w)
    if low <= e <= high:
        return abs(e - c) / w
    return abs(e - c) * w - kappa


def paper_score(points: list[list[float]], boxes: list[tuple[list[float], list[float]]], p: int, tanh: bool):
    """-sum_i ||dist(e_i, b_i)||_p over a fact's positions, with the optional tanh map."""
    f = math.tanh if tanh else (lambda x: x)
    total = 0.0
    for e, (low, high) in zip(points, boxes):
        d = [paper_distance(f(x), f(lo), f(hi)) for x, lo, hi in zip(e, low, high)]
        total += sum(abs(v) ** p for v in d) ** (1.0 / p)
    return -total


# A box [-1, 2] (w = 4, centre 0.5) probed inside, on both faces, outside on both sides.
CASES = [(-1.0, 2.0, e) for e in (-3.0, -1.0, -0.5, 0.5, 1.25, 2.0, 2.75, 10.0)] + [
    (0.3, 0.3, 0.3),  # a point box, hit exactly: w = 1, distance 0
    (0.3, 0.3, -0.7),  # a point box, missed: |e - c| * 1 - 0
    (-0.25, 0.25, 0.1),
]


@pytest.mark.parametrize(("low", "high", "e"), CASES)
def test_distance_matches_the_paper(low, high, e):
    got = point_box_distance(
        torch.tensor([e], dtype=torch.float64),
        torch.tensor([low], dtype=torch.float64),
        torch.tensor([high], dtype=torch.float64),
    )
    assert got.item() == pytest.approx(paper_distance(e, low, high), abs=1e-12)


def test_distance_is_continuous_at_the_faces_and_steeper_outside():
    low, high = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    for face in (-1.0, 2.0):
        inside = face + (1e-9 if face < 0 else -1e-9)
        outside = face - (1e-9 if face < 0 else -1e-9)
        a = point_box_distance(torch.tensor([inside], dtype=torch.float64), low, high)
        b = point_box_distance(torch.tensor([outside], dtype=torch.float64), low, high)
        assert abs(a - b).item() < 1e-8

    # slope 1/w inside, w outside (w = 4)
    def d(x: float) -> float:
        return point_box_distance(torch.tensor([x], dtype=torch.float64), low, high).item()

    assert (d(1.0) - d(0.75)) / 0.25 == pytest.approx(1 / 4)
    assert (d(3.0) - d(2.5)) / 0.5 == pytest.approx(4.0)


def test_distance_gradient_matches_finite_differences():
    torch.manual_seed(0)
    points = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    low = torch.randn(20, 6, dtype=torch.float64)
    high = (low + torch.rand(20, 6, dtype=torch.float64) * 2).requires_grad_(True)
    low.requires_grad_(True)
    torch.autograd.gradcheck(point_box_distance, (points, low, high))


def test_box_bounds_product_normalised_shape_and_scale():
    centre = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    shape = torch.tensor([[2.0, -0.5, 4.0]], dtype=torch.float64)  # geometric mean of |.| = 4 ** (1/3)
    raw = torch.tensor([0.7], dtype=torch.float64)  # elu(0.7) + 1 = 1.7
    low, high = box_bounds(centre, shape, raw)
    gm = (2.0 * 0.5 * 4.0) ** (1 / 3)
    widths = [1.7 * abs(s) / gm for s in (2.0, -0.5, 4.0)]
    assert (high - low)[0].tolist() == pytest.approx(widths, rel=1e-6)
    assert ((low + high) / 2)[0].tolist() == pytest.approx(centre[0].tolist())
    assert product_normalise(shape).abs().prod().item() == pytest.approx(1.0, rel=1e-6)
    # a negative raw scale still gives a positive size: elu(-2) + 1 = exp(-2)
    low, high = box_bounds(centre, shape, torch.tensor([-2.0], dtype=torch.float64))
    assert (high - low)[0, 0].item() == pytest.approx(math.exp(-2) * 2.0 / gm, rel=1e-6)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("tanh", [True, False])
def test_fact_scores_match_the_paper(p, tanh):
    points = [[0.1, 0.9], [-0.4, 0.0], [1.5, -2.0]]
    boxes = [([0.0, 0.0], [0.5, 1.0]), ([-1.0, 0.2], [0.3, 0.4]), ([-0.2, -0.3], [0.2, 0.3])]
    low = torch.tensor([b[0] for b in boxes], dtype=torch.float64)
    high = torch.tensor([b[1] for b in boxes], dtype=torch.float64)
    got = fact_scores(torch.tensor(points, dtype=torch.float64), low, high, None, p, tanh)
    assert got.item() == pytest.approx(paper_score(points, boxes, p, tanh), rel=1e-12)
    # a mask drops positions: the first two only
    mask = torch.tensor([True, True, False])
    got = fact_scores(torch.tensor(points, dtype=torch.float64), low, high, mask, p, tanh)
    assert got.item() == pytest.approx(paper_score(points[:2], boxes[:2], p, tanh), rel=1e-12)


def _hand_made_model(norm: int) -> BoxE:
    """Two relations (arity 2 and 3) over four entities with hand-set embeddings."""
    m = BoxE(dim=2, device="cpu", norm=norm)
    m.add_facts([("r", ["a", "b"]), ("t", ["a", "b", "c"]), ("t", ["d", "c", "a"])])
    m.entity_base = torch.tensor([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.6], [0.0, 0.3]])
    m.entity_bump = torch.tensor([[0.05, -0.1], [0.2, 0.0], [-0.1, 0.1], [0.3, 0.3]])
    m.box_centre = torch.tensor([[[0.0, 0.1], [0.2, 0.2], [9.0, 9.0]], [[0.1, -0.1], [0.0, 0.0], [0.3, 0.0]]])
    m.box_shape = torch.tensor([[[1.0, 2.0], [1.0, 1.0], [1.0, 1.0]], [[3.0, 0.5], [1.0, 4.0], [2.0, 2.0]]])
    m.box_scale = torch.tensor([[0.5, -0.3, 0.0], [1.0, 0.2, -1.5]])
    return m


@pytest.mark.parametrize("norm", [1, 2])
def test_model_scores_apply_bumps_as_the_paper(norm):
    """e_i^{r(e_1..e_n)} = base_i + sum_{j != i} bump_j, then tanh, distance, norm, sum."""
    m = _hand_made_model(norm)
    base, bump = m.entity_base.double(), m.entity_bump.double()
    low, high = box_bounds(m.box_centre.double(), m.box_shape.double(), m.box_scale.double())
    ids = {"a": 0, "b": 1, "c": 2, "d": 3}
    facts = [("r", ["a", "b"]), ("r", ["c", "d"]), ("t", ["a", "b", "c"]), ("t", ["d", "c", "a"])]
    rel = {"r": 0, "t": 1}
    got = m.score(facts)
    for (r, args), score in zip(facts, got.tolist()):
        idx = [ids[a] for a in args]
        points = [(base[i] + sum(bump[j] for j in idx if j != i)).tolist() for i in idx]
        boxes = [(low[rel[r], q].tolist(), high[rel[r], q].tolist()) for q in range(len(args))]
        assert score == pytest.approx(paper_score(points, boxes, norm, True), rel=1e-5)


@pytest.mark.parametrize("norm", [1, 2])
def test_candidate_scores_equal_scores_of_the_completed_facts(norm):
    m = _hand_made_model(norm)
    names = m.entities
    for relation, args in [("r", ["a", "b"]), ("t", ["d", "c", "a"])]:
        for hole in range(len(args)):
            query = [None if i == hole else a for i, a in enumerate(args)]
            ranked = dict(m.complete(relation, query))
            full = [(relation, [e if i == hole else a for i, a in enumerate(args)]) for e in names]
            direct = m.score(full)
            for e, s in zip(names, direct.tolist()):
                assert ranked[e] == pytest.approx(s, rel=1e-6, abs=1e-6)
