"""BoxE relational memory (Abboud et al., NeurIPS 2020): entities as points, relations as boxes.

``BoxE`` stores facts r(e_1, .., e_n) of any arity under entity and relation names,
learns box embeddings by self-adversarial negative sampling, completes facts with one
missing argument, and keeps injected rules (hierarchy, intersection, symmetry, inversion,
mutual exclusion) true by construction. See docs/science/boxe.md.
"""

from .errors import (
    ArityError,
    BoxEError,
    RuleConflictError,
    RuleError,
    UnknownEntityError,
    UnknownRelationError,
)
from .evaluate import filtered_ranks, rank_metrics
from .geometry import box_bounds, fact_scores, point_box_distance, product_normalise
from .model import BoxE, BoxEConfig
from .rules import Exclusion, Hierarchy, Intersection, Inversion, Symmetry, parse_rule
from .training import FitHistory

__all__ = [
    "ArityError",
    "BoxE",
    "BoxEConfig",
    "BoxEError",
    "Exclusion",
    "FitHistory",
    "Hierarchy",
    "Intersection",
    "Inversion",
    "RuleConflictError",
    "RuleError",
    "Symmetry",
    "UnknownEntityError",
    "UnknownRelationError",
    "box_bounds",
    "fact_scores",
    "filtered_ranks",
    "parse_rule",
    "point_box_distance",
    "product_normalise",
    "rank_metrics",
]
