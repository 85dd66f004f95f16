"""Z-IL: inference learning that computes backprop's gradients exactly, on any traced graph.

A model (an ``nn.Module``: MLPs, CNNs with pooling, residual networks, RNNs unrolled over
time, ...) is traced with torch.fx into a predictive-coding network of value nodes
(``trace``), whose inference under Z-IL's conditions gives the same parameter updates
as backpropagation (``network``; Song et al. 2020, Salvatori et al. 2021).

- ``zil_gradients(model, x, y, loss=...)``: the gradients of one minibatch;
- ``ZILTrainer(model, optimizer, loss=...)``: training with Z-IL's updates;
- ``ZILNetwork``: the network itself (feed-forward pass, errors, inference steps,
  weight updates, energy), for looking inside.

docs/science/zil.md explains the method and links the evidence.
"""

from .activations import ACTIVATION_DERIVATIVES
from .bind import SUPPORTED
from .learning import ZILTrainer, zil_gradients
from .network import LOSSES, PCState, ZILNetwork
from .ops import UnsupportedOperation

__all__ = [
    "ACTIVATION_DERIVATIVES",
    "LOSSES",
    "SUPPORTED",
    "PCState",
    "UnsupportedOperation",
    "ZILNetwork",
    "ZILTrainer",
    "zil_gradients",
]
