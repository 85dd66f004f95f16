"""Hierarchical predictive-coding memory (Salvatori et al., "Associative Memories via
Predictive Coding", NeurIPS 2021).

- ``config``: ``PCConfig`` and the defaults of recall;
- ``energy``: the activations (shared with ``PCGraph``), errors, energy and its gradient;
- ``relax``: step-size bounds, heavy ball and conjugate gradients;
- ``training``: what ``fit`` gives back and its weight learning rate;
- ``memory``: ``PCMemory`` (fit, retrieve, energy, to), with two parts of it in
  ``inference`` (relaxing with its weights) and ``fitting`` (``fit``);
- ``checkpoint``: ``PCMemory``'s files;
- ``index``: ``PCIndex``, the memory index: recall that lands on stored patterns.
"""

from .config import (
    COMPLETE_TOP_PRIOR,
    RECALL_HIDDEN_GAIN,
    RECALL_PRIOR_PER_CODE_PRECISION,
    RECALL_TOP_PRIOR,
    PCConfig,
)
from .energy import ACTIVATIONS
from .index import IndexRecall, PCIndex, PCIndexConfig
from .memory import FitHistory, PCMemory
from .relax import CG_CHECK_EVERY

__all__ = [
    "ACTIVATIONS",
    "CG_CHECK_EVERY",
    "COMPLETE_TOP_PRIOR",
    "RECALL_HIDDEN_GAIN",
    "RECALL_PRIOR_PER_CODE_PRECISION",
    "RECALL_TOP_PRIOR",
    "FitHistory",
    "IndexRecall",
    "PCConfig",
    "PCIndex",
    "PCIndexConfig",
    "PCMemory",
]
