"""memory_core: associative memories in PyTorch.

Universal Hopfield networks (Millidge et al., ICML 2022) with their classical instances,
and (see pc.py) hierarchical predictive-coding memories (Salvatori et al., NeurIPS 2021).
No web code here: the service in ``app`` builds on this package, never the reverse.
"""

from .checks import EmptyMemoryError, resolve_device
from .hopfield import (
    HopfieldConfig,
    HopfieldNetwork,
    SparseDistributedMemory,
    UniversalHopfield,
    modern_hopfield,
)
from .pc import FitHistory, PCConfig, PCMemory
from .separation import SEPARATIONS, make_separation
from .similarity import SIMILARITIES, get_similarity, similarity

__version__ = "0.1.0"

__all__ = [
    "EmptyMemoryError",
    "FitHistory",
    "HopfieldConfig",
    "HopfieldNetwork",
    "PCConfig",
    "PCMemory",
    "SEPARATIONS",
    "SIMILARITIES",
    "SparseDistributedMemory",
    "UniversalHopfield",
    "get_similarity",
    "make_separation",
    "modern_hopfield",
    "resolve_device",
    "similarity",
    "__version__",
]
