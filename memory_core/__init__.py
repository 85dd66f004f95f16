"""memory_core: associative memories in PyTorch.

Universal Hopfield networks (Millidge et al., ICML 2022) with their classical instances,
(see pc.py) hierarchical predictive-coding memories (Salvatori et al., NeurIPS 2021),
predictive coding on arbitrary graphs (pcgraph.py, Salvatori et al., NeurIPS 2022) and
Z-IL, inference learning that equals backprop exactly (zil/, Song et al. 2020; Salvatori et al. 2021), and
BoxE relational memories that complete facts (boxe/, Abboud et al., NeurIPS 2020).
No web code here: the service in ``app`` builds on this package, never the reverse.
"""

from .boxe import BoxE, BoxEConfig
from .checks import EmptyMemoryError, resolve_device
from .hopfield import (
    HopfieldConfig,
    HopfieldNetwork,
    SparseDistributedMemory,
    UniversalHopfield,
    modern_hopfield,
)
from .pc import FitHistory, IndexRecall, PCConfig, PCIndex, PCIndexConfig, PCMemory
from .pcgraph import PCGraph, PCGraphConfig
from .separation import SEPARATIONS, make_separation
from .similarity import SIMILARITIES, get_similarity, similarity
from .zil import ZILTrainer, zil_gradients

__version__ = "0.1.0"

__all__ = [
    "SEPARATIONS",
    "SIMILARITIES",
    "BoxE",
    "BoxEConfig",
    "EmptyMemoryError",
    "FitHistory",
    "HopfieldConfig",
    "HopfieldNetwork",
    "IndexRecall",
    "PCConfig",
    "PCGraph",
    "PCGraphConfig",
    "PCIndex",
    "PCIndexConfig",
    "PCMemory",
    "SparseDistributedMemory",
    "UniversalHopfield",
    "ZILTrainer",
    "__version__",
    "get_similarity",
    "make_separation",
    "modern_hopfield",
    "resolve_device",
    "similarity",
    "zil_gradients",
]
