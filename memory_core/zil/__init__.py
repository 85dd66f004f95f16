"""Z-IL (a package now; the next commit splits it)."""

from .activations import ACTIVATION_DERIVATIVES, ZILNetwork, zil_gradients

__all__ = ["ACTIVATION_DERIVATIVES", "ZILNetwork", "zil_gradients"]
