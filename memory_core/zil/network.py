"""The predictive-coding network of a model, and Z-IL on it.

Every value node i (see ``trace``) holds a value x_i and predicts it from its operands,
mu_i = g_i(operands); its error is eps_i = x_i - mu_i. The energy is

    E = sum_{i not output} 1/2 |eps_i|^2 + L(mu_out, y),

and the output node's error is eps_out = -dL/dmu_out: y - mu_out for ``loss="sse"``
(L = 1/2 |mu_out - y|^2, the output clamped to y) and onehot(y) - softmax(mu_out) for
``loss="cross_entropy"`` (L = softmax cross-entropy, both summed over the batch).
Inference moves the free nodes down the energy, x_i += gamma (-eps_i + sum over the
nodes c that i feeds of (d mu_c / d x_i)^T eps_c), and learning moves a parameter theta
of node i along eps_i d mu_i / d theta (so dE/dtheta = -eps_i d mu_i / d theta).

Z-IL's conditions (Song et al. 2020; Salvatori et al. 2021, for CNNs, RNNs and any
computational graph) make these updates exactly backprop's, on a graph levelled by
``trace`` (every path from a node to the output equally long):

1. zero initial errors: every x_i starts at its prediction (the feed-forward pass);
2. inference rate gamma = 1;
3. the parameters of a node at level l (its distance to the output) learn at inference
   step l; a parameter shared by several nodes (an RNN's weights) sums their updates.

``learn`` runs it two ways. ``schedule="full"`` is the network as written: at every step
every node's prediction, error and feedback are recomputed. ``"wavefront"`` computes only
what changes: under the conditions, eps_i is exactly 0 before step l_i and the nodes of
level l_i move first at step l_i, so at step l only the nodes of level l need their
value x_i = mu_i + feedback, error and updates; everything else is unchanged or never
read again. Both give the same numbers (the tests check it); the wavefront does the work
of one backward pass, the full network that work at each of its (depth) steps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.node import map_aggregate

from .trace import HOLE, VALUE_NODES, Edge, Plan, Slot, Vertex, build_plan, trace

__all__ = ["LOSSES", "PCState", "Prediction", "ZILNetwork"]

LOSSES = ("sse", "cross_entropy")
SCHEDULES = ("auto", "wavefront", "full")


@dataclass
class Prediction:
    """mu of one value node, with what its VJPs need (its op's and its folded steps')."""

    mu: Tensor
    ctx: Any
    edge_ctx: list[list[Any] | None]


@dataclass
class PCState:
    """The network's state for one minibatch: x of every value node (``values[-1]``: the
    clamped output, y or onehot(y)) and their predictions, fresh when ``fresh``."""

    plan: Plan
    slots: list[Any]
    values: list[Tensor]
    predictions: list[Prediction]
    fresh: bool = True


def _resolve(arg: Any, slots: list[Any]) -> Any:
    return slots[arg.index] if isinstance(arg, Slot) else arg


def _edge_value(e: Edge, values: list[Tensor], slots: list[Any], params: dict) -> tuple[Any, list | None]:
    """An operand of a prediction, and the contexts of its folded steps."""
    if e.kind == "const":
        return _resolve(e.ref, slots), None
    x = values[e.ref] if e.kind == "vertex" else params[e.ref]
    if not e.chain:
        return x, None
    ctxs = []
    for step in e.chain:
        x, ctx = step.op.forward(*[x if a is HOLE else _resolve(a, slots) for a in step.args])
        ctxs.append(ctx)
    return x, ctxs


def _predict(v: Vertex, values: list[Tensor], slots: list[Any], params: dict) -> Prediction:
    operands, edge_ctx = [], []
    for e in v.edges:
        x, ctxs = _edge_value(e, values, slots, params)
        operands.append(x)
        edge_ctx.append(ctxs)
    mu, ctx = v.op.forward(*operands)
    return Prediction(mu, ctx, edge_ctx)


def _send(v: Vertex, p: Prediction, eps: Tensor, needs: Sequence[bool]) -> Iterator[tuple[Edge, Tensor]]:
    """(d mu_v / d operand)^T eps for each operand flagged in ``needs``, through its folded steps."""
    grads = v.op.vjp(eps, p.ctx, needs)
    for k, e in enumerate(v.edges):
        g = grads[k]
        if needs[k] and g is not None:  # None: the operand did not take part (an RNN's W_hh at t = 0)
            if e.chain:
                for step, ctx in zip(reversed(e.chain), reversed(p.edge_ctx[k])):
                    g = step.op.vjp(g, ctx, step.needs)[step.at]
            yield e, g


class _Sums:
    """Sums of tensors by key. The first term is kept as it is (it may be shared: a VJP can
    hand one tensor to two operands); the second makes a buffer of our own, which later
    terms are added into in place."""

    def __init__(self) -> None:
        self.sums: dict[Any, Tensor] = {}
        self._owned: set[Any] = set()

    def add(self, key: Any, g: Tensor) -> None:
        old = self.sums.get(key)
        if old is None:
            self.sums[key] = g
        elif key in self._owned:
            old.add_(g)
        else:
            self.sums[key] = old + g
            self._owned.add(key)


class ZILNetwork:
    """The predictive-coding network of a model, sharing its parameters (no copy).

    Arguments:
        model: an ``nn.Module`` that torch.fx can trace, built from the operations listed
            in ``memory_core.zil.bind.SUPPORTED``, taking tensors and returning one tensor.
        loss: "sse" (0.5 x summed squared error, y shaped like the output) or
            "cross_entropy" (softmax cross-entropy summed over the batch, y class indices
            (B,), output (B, C)).
        value_nodes: "layers" (a value node per weight layer and per join, the parameter-free
            single-operand operations folded into the predictions: mu = W f(x)) or
            "operations" (a value node per operation). Both are exact.
        levelled: insert identity nodes where an edge skips levels (Z-IL's graph
            condition). False leaves them out, to show that the result is then not exact
            (it forces the full schedule).
    """

    def __init__(
        self, model: nn.Module, *, loss: str = "sse", value_nodes: str = "layers", levelled: bool = True
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if value_nodes not in VALUE_NODES:
            raise ValueError(f"value_nodes must be one of {VALUE_NODES}, got {value_nodes!r}")
        self.model, self.loss_name, self.levelled, self.value_nodes = model, loss, levelled, value_nodes
        self.graph_module = trace(model)
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()

    # --- structure ---
    def plan(self, x: Tensor | Sequence[Tensor]) -> Plan:
        """The value nodes for inputs shaped like ``x`` (built once per shape, dtype and device)."""
        inputs = _inputs(x)
        key = (self.model.training, *((t.shape, t.dtype, t.device) for t in inputs))
        plan = self._plans.get(key)
        if plan is None:
            _check_dtypes(self.model, inputs)
            try:
                plan = build_plan(self.model, self.graph_module, inputs, self.levelled, self.value_nodes)
            except RuntimeError as exc:  # torch's own complaint, e.g. a wrong number of channels
                shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
                raise ValueError(f"the model does not run on x of shape {shapes}: {exc}") from exc
            self._plans[key] = plan
            if len(self._plans) > 8:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return plan

    # --- the network's dynamics ---
    @torch.no_grad()
    def feedforward(self, x: Tensor | Sequence[Tensor], y: Tensor) -> PCState:
        """Condition 1: every value node at its prediction (zero errors), the output clamped to y."""
        inputs = _inputs(x)
        plan = self.plan(inputs)
        slots = list(inputs) + [None] * (plan.n_slots - len(inputs))
        for c in plan.consts:
            args, kwargs = map_aggregate((c.args, c.kwargs), lambda a: _resolve(a, slots))
            slots[c.slot] = c.fn(*args, **kwargs)
        values: list[Tensor] = []
        predictions = []
        for v in plan.vertices:
            p = _predict(v, values, slots, plan.params)
            predictions.append(p)
            values.append(p.mu)
        values[-1] = self._clamp(plan, y, predictions[-1].mu)
        return PCState(plan, slots, values, predictions)

    @torch.no_grad()
    def errors(self, state: PCState) -> list[Tensor]:
        """eps_i = x_i - mu_i for every value node (output: -dL/dmu_out), predictions refreshed."""
        if not state.fresh:
            vs, params = state.plan.vertices, state.plan.params
            state.predictions = [_predict(v, state.values, state.slots, params) for v in vs]
            state.fresh = True
        eps = [x - p.mu for x, p in zip(state.values[:-1], state.predictions[:-1])]
        eps.append(self.output_error(state.predictions[-1].mu, state.values[-1]))
        return eps

    @torch.no_grad()
    def inference_step(self, state: PCState, eps: list[Tensor], rate: float = 1.0) -> None:
        """x_i += rate (-eps_i + sum_c (d mu_c / d x_i)^T eps_c) for every free node (in place on ``state``)."""
        vs, n = state.plan.vertices, len(state.values)
        feedback = _Sums()
        for i in range(n - 1, -1, -1):
            if any(vs[i].feeds):
                for e, g in _send(vs[i], state.predictions[i], eps[i], vs[i].feeds):
                    feedback.add(e.ref, g)
        for i in range(n - 1):
            state.values[i] = state.values[i] + rate * (-eps[i] + feedback.sums[i])
        state.fresh = False

    @torch.no_grad()
    def weight_updates(self, state: PCState, eps: list[Tensor], nodes: Sequence[int], into: _Sums) -> None:
        """into[name] += eps_i d mu_i / d theta for the parameters of the given value nodes."""
        vs = state.plan.vertices
        for i in nodes:
            for e, g in _send(vs[i], state.predictions[i], eps[i], vs[i].learns):
                into.add(e.ref, g)

    def output_error(self, mu: Tensor, clamped: Tensor) -> Tensor:
        """eps_out = -dL/dmu_out at the output's prediction mu, the output clamped to y / onehot(y)."""
        if self.loss_name == "sse":
            return clamped - mu
        return clamped - torch.softmax(mu, dim=1)

    def loss(self, state: PCState) -> Tensor:
        """L(mu_out, y) at the current predictions (a scalar, summed over the batch)."""
        mu, clamped = state.predictions[-1].mu, state.values[-1]
        if self.loss_name == "sse":
            return 0.5 * ((mu - clamped) ** 2).sum()
        return -(clamped * F.log_softmax(mu, dim=1)).sum()

    def energy(self, state: PCState, eps: list[Tensor]) -> Tensor:
        """E = sum over the free nodes of 1/2 |eps_i|^2, plus the loss (a scalar)."""
        return 0.5 * sum((e * e).sum() for e in eps[:-1]) + self.loss(state)

    # --- Z-IL ---
    @torch.no_grad()
    def learn(
        self, state: PCState, *, inference_rate: float = 1.0, step_offset: int = 0, schedule: str = "auto"
    ) -> dict[str, Tensor]:
        """Run inference from a feed-forward state and return dE/dtheta for the plan's parameters.

        Arguments:
            state: from ``feedforward`` (consumed: its values move).
            inference_rate: gamma (Z-IL: 1).
            step_offset: the nodes of level l learn at step l + step_offset (Z-IL: 0).
            schedule: "wavefront" (only the nodes that change; Z-IL's conditions only),
                "full" (every node at every step) or "auto" (wavefront when it applies).

        Returns:
            {parameter name: dE/dtheta}, summed over the batch and over the nodes sharing it.
        """
        if not inference_rate > 0:
            raise ValueError(f"inference_rate must be > 0, got {inference_rate}")
        if step_offset < 0:
            raise ValueError(f"step_offset must be >= 0, got {step_offset}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        zil = inference_rate == 1 and step_offset == 0 and state.plan.levelled
        if schedule == "wavefront" and not zil:
            raise ValueError(
                "schedule='wavefront' holds only under Z-IL's conditions (rate 1, no step offset, levelled)"
            )
        updates = (
            self._wavefront(state)
            if schedule != "full" and zil
            else self._full(state, inference_rate, step_offset)
        )
        return {name: -u for name, u in updates.sums.items()}

    def _full(self, state: PCState, rate: float, offset: int) -> _Sums:
        levels = [v.level for v in state.plan.vertices]
        last = state.plan.depth - 1 + offset
        updates = _Sums()
        for step in range(last + 1):
            eps = self.errors(state)
            learners = [
                i for i in range(len(levels) - 1, -1, -1) if levels[i] == step - offset
            ]  # condition 3
            self.weight_updates(state, eps, learners, updates)
            if step < last:
                self.inference_step(state, eps, rate)
        return updates

    def _wavefront(self, state: PCState) -> _Sums:
        vs, values, preds = state.plan.vertices, state.values, state.predictions
        n = len(vs)
        feedback, updates = _Sums(), _Sums()
        for i in range(n - 1, -1, -1):  # level 0 (the output) first; within a level, as in _full
            if i == n - 1:
                eps = self.output_error(preds[i].mu, values[i])
            else:
                values[i] = values[i] + feedback.sums.pop(i)  # step l_i: x_i = mu_i + 1 * (-0 + feedback)
                eps = values[i] - preds[i].mu
            for e, g in _send(vs[i], preds[i], eps, vs[i].needs):
                (feedback if e.kind == "vertex" else updates).add(e.ref, g)
        state.fresh = False
        return updates

    @torch.no_grad()
    def _clamp(self, plan: Plan, y: Tensor, mu: Tensor) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a tensor, got {type(y).__name__}")
        if self.loss_name == "sse":
            if not y.is_floating_point():
                raise TypeError("y must be a float tensor (loss='sse')")
            if y.shape != mu.shape:
                raise ValueError(f"y has shape {tuple(y.shape)}, the model's output has {tuple(mu.shape)}")
            return y.to(mu.dtype)
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError("with loss='cross_entropy', y must hold class indices (an integer tensor)")
        if mu.dim() != 2 or y.shape != mu.shape[:1]:
            raise ValueError(
                f"loss='cross_entropy' needs an output (B, C) and y (B,); got {tuple(mu.shape)} and {tuple(y.shape)}"
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= mu.shape[1]):
            raise ValueError(f"class indices must lie in [0, {mu.shape[1]})")
        return F.one_hot(y.to(mu.device), mu.shape[1]).to(mu.dtype)


def _check_dtypes(model: nn.Module, inputs: tuple[Tensor, ...]) -> None:
    """TypeError naming both dtypes when an input's differs from the model's parameters'."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    wrong = [t.dtype for t in inputs if dtype is not None and t.dtype != dtype]
    if wrong:
        raise TypeError(
            f"x has dtype {wrong[0]}, the model's parameters {dtype}: convert one of them "
            "(model.double() or x.float(), ...)"
        )


def _inputs(x: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    inputs = (x,) if isinstance(x, Tensor) else tuple(x)
    if not inputs or not all(isinstance(t, Tensor) and t.is_floating_point() for t in inputs):
        raise TypeError("x must be a float tensor (or a sequence of them, one per model input)")
    return inputs
