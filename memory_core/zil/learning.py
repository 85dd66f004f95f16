"""Z-IL for users: ``zil_gradients`` (one minibatch) and ``ZILTrainer`` (training with an optimizer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .network import ZILNetwork

__all__ = ["ZILTrainer", "zil_gradients"]


def zil_gradients(
    model: nn.Module,
    x: Tensor | Sequence[Tensor],
    y: Tensor,
    *,
    loss: str = "sse",
    inference_rate: float = 1.0,
    step_offset: int = 0,
    value_nodes: str = "layers",
) -> dict[str, Tensor]:
    """The gradients of the loss by zero-divergence inference learning (Z-IL).

    With the defaults this is Z-IL and equals autograd's gradients up to round-off. The
    two knobs break one of its conditions each, to show that they are what makes it exact.

    Arguments:
        model: an ``nn.Module`` torch.fx can trace (``memory_core.zil.bind.SUPPORTED``
            lists its operations), returning one tensor.
        x: the model's input (B, ...), or a sequence of inputs.
        y: loss "sse": targets shaped like ``model(x)``; loss "cross_entropy": class
            indices (B,) for an output (B, C).
        loss: "sse" (0.5 * sum((model(x) - y)^2)) or "cross_entropy" (softmax
            cross-entropy summed over the batch).
        inference_rate: the inference rate gamma (Z-IL: 1).
        step_offset: take the weight update of the value nodes l steps from the output at
            inference step l + step_offset (Z-IL: 0).
        value_nodes: "layers" (mu = W f(x)) or "operations" (a value node per operation).

    Returns:
        {name: dLoss/dparameter} for every trainable parameter of ``model.named_parameters``
        (zeros for one the output does not depend on), summed over the batch. The PC
        weight change is its negative.
    """
    network = ZILNetwork(model, loss=loss, value_nodes=value_nodes)
    state = network.feedforward(x, y)
    grads = network.learn(state, inference_rate=inference_rate, step_offset=step_offset)
    return {
        name: grads[name] if name in grads else torch.zeros_like(p)
        for name, p in model.named_parameters()
        if p.requires_grad
    }


class ZILTrainer:
    """Trains a model with Z-IL's weight updates applied by a torch optimizer.

    Each ``step`` runs the feed-forward pass, Z-IL's inference and learning (the
    wavefront schedule), writes dLoss/dtheta into every parameter's ``.grad`` (replacing
    it; ``None`` for a parameter the output does not depend on, as autograd leaves it) and
    calls ``optimizer.step()``. With the same initial weights, minibatches and optimizer,
    it follows backprop's trajectory (results/zil_training.md).

    Arguments:
        model: as for ``zil_gradients``; traced once, here.
        optimizer: any torch optimizer over the model's parameters.
        loss: "sse" or "cross_entropy" (summed over the batch: scale the learning rate
            by 1 / batch size to match a mean-reduced loss).
        value_nodes: "layers" or "operations", as for ``ZILNetwork``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        loss: str = "sse",
        value_nodes: str = "layers",
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.network = ZILNetwork(model, loss=loss, value_nodes=value_nodes)
        self._trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def gradients(self, x: Tensor | Sequence[Tensor], y: Tensor) -> tuple[dict[str, Tensor], float]:
        """(Z-IL's {name: dLoss/dtheta}, the loss at the feed-forward pass) for one minibatch."""
        state = self.network.feedforward(x, y)
        loss = float(self.network.loss(state))
        return self.network.learn(state), loss

    def step(self, x: Tensor | Sequence[Tensor], y: Tensor) -> float:
        """One update from the minibatch (x, y); returns the loss before it."""
        grads, loss = self.gradients(x, y)
        for name, p in self._trainable:
            p.grad = grads.get(name)
        self.optimizer.step()
        return loss
