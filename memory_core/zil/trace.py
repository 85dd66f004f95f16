"""Trace a model into a Z-IL plan: its value nodes, their predictions and their levels.

A model is traced once with ``torch.fx`` into a graph of calls. ``build_plan`` then walks
that graph with real inputs (so shapes and the unrolled length of an ``nn.RNN`` are
known) and sorts every result into one of three kinds:

- a constant: anything computed from the inputs (and frozen tensors) alone, such as
  ``x[:, t]`` or a zero initial state. Constants are clamped, like the input; those that
  depend on the input's values are recomputed at every call (the plan's ``consts``).
- a parameter-derived value, carried as (source, chain): a value node or a trainable
  parameter followed by the parameter-free single-operand operations applied to it
  (activations, pooling, reshapes, ...). The chain is folded into the prediction of the
  value node that consumes it, as in mu_l = W_l f(x_{l-1}) (``value_nodes="layers"``;
  with ``"operations"`` each of these operations is a value node of its own).
- a value node (``Vertex``): the output of a weight layer (Linear, Conv2d, an RNN cell,
  matmul) or of an operation that joins two or more value nodes or parameters (an
  addition of a residual branch, a concatenation). Its prediction mu is that operation
  applied to its operands (``edges``).

The graph is then levelled as Salvatori et al. (2021, "Reverse differentiation via
predictive coding") do: a value node's level is its distance to the output, and where an
edge skips levels (a residual connection), identity value nodes are inserted along it so
that every path from a node to the output has the same length. Errors then reach every
node of a level at the same inference step, which is the step its weights learn at.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.node import map_aggregate

from . import ops
from .bind import bind_function, bind_method, bind_module
from .ops import UnsupportedOperation

__all__ = ["VALUE_NODES", "Edge", "Plan", "Slot", "Step", "Vertex", "build_plan", "trace"]

VALUE_NODES = ("layers", "operations")


class _Hole:
    def __repr__(self) -> str:
        return "HOLE"


HOLE = _Hole()  # where a folded step's carried value goes among its operands


@dataclass(frozen=True)
class Slot:
    """A constant recomputed from the inputs at every call: index into the plan's slots."""

    index: int


@dataclass
class Step:
    """A folded parameter-free operation: ``op.forward(*args)`` with the carried value at ``at``."""

    op: ops.Op
    args: tuple
    at: int
    needs: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        self.needs = tuple(i == self.at for i in range(len(self.args)))


@dataclass
class Edge:
    """One operand of a value node's prediction.

    ``kind`` "vertex" (``ref`` the index of a value node), "param" (``ref`` the parameter's
    name) or "const" (``ref`` a Slot or the constant itself); ``chain`` the folded steps
    applied to the source's value, first to last.
    """

    kind: str
    ref: Any
    chain: tuple[Step, ...] = ()


@dataclass
class Vertex:
    """A value node x with its prediction mu = op(edges) and its level (distance to the output)."""

    name: str
    op: ops.Op
    edges: list[Edge]
    level: int = 0
    feeds: tuple[bool, ...] = ()  # per edge: it comes from a value node (gets feedback)
    learns: tuple[bool, ...] = ()  # per edge: it comes from a parameter (gets a weight update)
    needs: tuple[bool, ...] = ()  # feeds or learns

    def finish(self) -> None:
        self.feeds = tuple(e.kind == "vertex" for e in self.edges)
        self.learns = tuple(e.kind == "param" for e in self.edges)
        self.needs = tuple(f or p for f, p in zip(self.feeds, self.learns))


@dataclass
class ConstStep:
    """slots[slot] = fn(*args, **kwargs), Slot references resolved."""

    slot: int
    fn: Callable
    args: tuple
    kwargs: dict


@dataclass
class Plan:
    """A model's value nodes for one input signature, in level order (output last)."""

    n_inputs: int
    n_slots: int
    consts: list[ConstStep]
    vertices: list[Vertex]
    params: dict[str, nn.Parameter]
    depth: int  # number of levels: the inference steps Z-IL takes
    output_shape: torch.Size
    levelled: bool  # identity nodes inserted: every edge spans one level

    def __len__(self) -> int:
        return len(self.vertices)


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with an error that says what Z-IL needs when tracing fails."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, ... for dynamic control flow
        raise UnsupportedOperation(
            f"the model could not be traced with torch.fx ({type(error).__name__}: {error}). Z-IL needs a "
            "static graph: loop over a fixed number of steps (e.g. range(self.steps)) or use nn.RNN, and "
            "create tensors with x.new_zeros(...) rather than torch.zeros(x.size(0), ...)"
        ) from error


# --- the builder's symbolic values ---------------------------------------------------------
@dataclass
class _Const:
    value: Any
    slot: Slot | None = None  # set: depends on the input's values, recomputed per call


@dataclass
class _Sym:
    kind: str  # "vertex" or "param"
    ref: Any
    chain: tuple[Step, ...]
    value: Tensor  # at the build call, for shapes


@dataclass
class _Stacked:
    """A stack not yet built (an nn.RNN's outputs): selecting one item needs no stack node."""

    items: list[Any]
    dim: int
    name: str


@dataclass
class _RNNOut:
    seq: _Stacked
    last: _Stacked


_STATIC_METHODS = {"size", "dim", "numel", "new_zeros", "new_ones", "new_full", "new_empty"}
_STATIC_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda"}
_STATIC_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like}


def _is_static_query(kind: str, target: Any, args: tuple) -> bool:
    """Calls whose result depends on shapes, dtypes and devices only (fixed within a plan)."""
    if kind == "call_method":
        return target in _STATIC_METHODS
    if kind == "call_function":
        if target is builtins.getattr:
            return args[1] in _STATIC_ATTRS
        return target in _STATIC_FUNCTIONS
    return False


def _method(name: str) -> Callable:
    return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)


def _leaves(tree: Any) -> list[Any]:
    out: list[Any] = []
    map_aggregate(tree, lambda a: out.append(a) or a)
    return out


def _concrete(tree: Any) -> Any:
    return map_aggregate(tree, lambda a: a.value if isinstance(a, (_Const, _Sym)) else a)


def _refs(tree: Any) -> Any:
    """Constants as a plan stores them: a Slot if recomputed per call, else the value itself."""
    return map_aggregate(tree, lambda a: (a.slot or a.value) if isinstance(a, _Const) else a)


class _Builder:
    def __init__(self, model: nn.Module, gm: fx.GraphModule, inputs: tuple[Tensor, ...], fold: bool) -> None:
        self.model, self.gm, self.inputs, self.fold = model, gm, inputs, fold
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.vertices: list[Vertex] = []
        self.consts: list[ConstStep] = []
        self.n_slots = len(inputs)
        self.calls: dict[str, int] = {}  # module name -> times called so far

    # -- kinds of values --
    def tensor(self, obj: Any) -> Any:
        """A module attribute as an operand: a trainable parameter, or a constant."""
        if isinstance(obj, Tensor) and obj.requires_grad and id(obj) in self.names:
            return _Sym("param", self.names[id(obj)], (), obj)
        return _Const(obj)

    def constant(self, fn: Callable, args: tuple, kwargs: dict, name: str, static: bool = False) -> _Const:
        value = fn(*_concrete(args), **_concrete(kwargs))
        dynamic = not static and any(isinstance(a, _Const) and a.slot for a in _leaves((args, kwargs)))
        if not dynamic:
            return _Const(value)
        if isinstance(value, (bool, int, float)):
            raise UnsupportedOperation(
                f"{name!r} turns the input's values into a Python number: Z-IL's graph must not depend on them"
            )
        slot = Slot(self.n_slots)
        self.n_slots += 1
        self.consts.append(ConstStep(slot.index, fn, _refs(args), _refs(kwargs)))
        return _Const(value, slot)

    def vertex(self, name: str, op: ops.Op, operands: list[Any]) -> _Sym:
        edges = []
        for o in operands:
            if isinstance(o, _Sym):
                edges.append(Edge(o.kind, o.ref, o.chain))
            else:
                edges.append(Edge("const", _refs(o)))
        out, _ = op.forward(*_concrete(operands))
        self.vertices.append(Vertex(name, op, edges))
        return _Sym("vertex", len(self.vertices) - 1, (), out)

    def apply(self, op: ops.Op, operands: list[Any], name: str) -> Any:
        """op on its operands: a new value node, a step folded onto the one non-constant operand,
        or a constant."""
        operands = [self.materialize(o) for o in operands]
        syms = [i for i, o in enumerate(operands) if isinstance(o, _Sym)]
        if op.vertex or len(syms) >= 2 or (syms and not self.fold):
            return self.vertex(name, op, operands)
        if not syms:
            return self.constant(lambda *a: op.forward(*a)[0], tuple(operands), {}, name)
        i, src = syms[0], operands[syms[0]]
        out, _ = op.forward(*_concrete(operands))
        args = tuple(HOLE if j == i else _refs(o) for j, o in enumerate(operands))
        return _Sym(src.kind, src.ref, src.chain + (Step(op, args, i),), out)

    def materialize(self, value: Any) -> Any:
        if isinstance(value, _Stacked):
            return self.apply(ops.Stack(value.dim), value.items, value.name)
        if isinstance(value, _RNNOut):
            raise UnsupportedOperation("an nn.RNN's result must be unpacked: out, h = rnn(x)")
        return value

    def select(self, value: Any, dim: int, i: int, name: str) -> Any:
        index = (slice(None),) * dim + (i,)
        if isinstance(value, _Sym):
            return self.apply(ops.GetItem(index), [value], name)
        return self.constant(operator.getitem, (value, index), {}, name)

    # -- calls --
    def call(self, node: fx.Node, env: dict) -> Any:
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        kind, target = node.op, node.target
        module = self.gm.get_submodule(target) if kind == "call_module" else None
        if _is_static_query(kind, target, args):
            fn = target if kind == "call_function" else _method(target)
            return self.constant(fn, args, kwargs, node.name, static=True)
        if kind == "call_function" and target is operator.getitem:
            if isinstance(args[0], _RNNOut):
                if args[1] not in (0, 1):
                    raise UnsupportedOperation(f"{node.name!r}: an nn.RNN returns (output, h_n)")
                return args[0].seq if args[1] == 0 else args[0].last
            if isinstance(args[0], _Stacked):
                item = _select_stacked(args[0], args[1])
                if item is not None:
                    return item
        if isinstance(module, nn.RNN):
            return self.rnn(module, self.call_name(target), args, kwargs)
        args, kwargs = map_aggregate((args, kwargs), self.materialize)
        trainable = module is not None and any(p.requires_grad for p in module.parameters())
        if not trainable and not any(isinstance(a, _Sym) for a in _leaves((args, kwargs))):
            fn = module if module is not None else target if kind == "call_function" else _method(target)
            return self.constant(fn, args, kwargs, node.name)
        # operands stay symbolic; other arguments (sizes, dims, flags) are passed as values
        args, kwargs = map_aggregate(
            (args, kwargs),
            lambda a: a.value if isinstance(a, _Const) and not isinstance(a.value, Tensor) else a,
        )
        if module is not None:
            bound = bind_module(module, target, args, kwargs, lambda t: None if t is None else self.tensor(t))
        else:
            try:
                bind = bind_function if kind == "call_function" else bind_method
                bound = bind(target, args, kwargs)
            except UnsupportedOperation as error:
                raise UnsupportedOperation(f"at {node.name!r}: {error}") from None
        if bound.op is None:
            return bound.operands[0]
        return self.apply(bound.op, bound.operands, node.name if module is None else self.call_name(target))

    def call_name(self, module_name: str) -> str:
        """A value node's name: the module's, then name_1, name_2, ... for later calls of it."""
        k = self.calls[module_name] = self.calls.get(module_name, -1) + 1
        return module_name if k == 0 else f"{module_name}_{k}"

    def rnn(self, rnn: nn.RNN, name: str, args: tuple, kwargs: dict) -> _RNNOut:
        """Unroll an nn.RNN over time: one RNN-cell value node per layer and step, weights shared."""
        if rnn.bidirectional:
            raise UnsupportedOperation(f"module {name!r} (RNN): bidirectional RNNs are not supported by Z-IL")
        if rnn.dropout and rnn.training and rnn.num_layers > 1:
            raise UnsupportedOperation(f"module {name!r} (RNN): dropout between layers in training mode")
        x, hx = args[0], args[1] if len(args) > 1 else kwargs.get("hx")
        if x.value.dim() != 3:
            raise UnsupportedOperation(f"module {name!r} (RNN): give a batched (3-D) sequence")
        tdim = 1 if rnn.batch_first else 0
        steps = [self.select(x, tdim, t, f"{name}.x{t}") for t in range(x.value.shape[tdim])]
        last = []
        for layer in range(rnn.num_layers):
            weights = [
                getattr(rnn, f"{k}_l{layer}", None) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            operands = [None if w is None else self.tensor(w) for w in weights]
            h = None if hx is None else self.select(hx, 0, layer, f"{name}.h0_{layer}")
            outs = []
            for t, x_t in enumerate(steps):
                h = self.apply(ops.RNNCell(rnn.nonlinearity), [x_t, h, *operands], f"{name}.l{layer}.t{t}")
                outs.append(h)
            steps = outs
            last.append(h)
        return _RNNOut(_Stacked(steps, tdim, f"{name}.output"), _Stacked(last, 0, f"{name}.h_n"))

    # -- the whole graph --
    def run(self, levelled: bool) -> Plan:
        env: dict[fx.Node, Any] = {}
        n_input, output = 0, None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if n_input < len(self.inputs):
                    env[node] = _Const(self.inputs[n_input], Slot(n_input))
                elif node.args:
                    env[node] = _Const(node.args[0])  # a default argument
                else:
                    raise TypeError(f"the model takes more inputs than the {len(self.inputs)} given")
                n_input += 1
            elif node.op == "get_attr":
                obj = self.gm
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                env[node] = self.tensor(obj)
            elif node.op == "output":
                output = self.materialize(
                    env[node.args[0]] if isinstance(node.args[0], fx.Node) else node.args[0]
                )
            else:
                env[node] = self.call(node, env)
        if n_input < len(self.inputs):
            raise TypeError(f"the model takes {n_input} inputs, {len(self.inputs)} were given")
        if isinstance(output, _Const):
            raise ValueError(  # noqa: TRY004 (a model, not a type, is wrong)
                "the model's output does not depend on any trainable parameter: nothing to learn"
            )
        if not isinstance(output, _Sym):
            raise UnsupportedOperation(
                f"the model must return one tensor, it returns {type(output).__name__}"
            )
        if output.kind != "vertex" or output.chain:
            output = self.vertex("output", ops.Identity(), [output])
        return self.finish(output.ref, output.value.shape, levelled)

    def finish(self, output: int, output_shape: torch.Size, levelled: bool) -> Plan:
        """Keep the value nodes the output depends on, level them and sort them by level."""
        vs = self.vertices
        keep, todo = set(), [output]
        while todo:
            v = todo.pop()
            if v not in keep:
                keep.add(v)
                todo.extend(e.ref for e in vs[v].edges if e.kind == "vertex")
        level = {output: 0}  # the longest distance to the output
        for v in sorted(keep, reverse=True):  # creation order is topological: consumers come later
            for e in vs[v].edges:
                if e.kind == "vertex":
                    level[e.ref] = max(level.get(e.ref, 0), level[v] + 1)
        if levelled:
            self.insert_delays(sorted(keep), level)
        order = sorted(level, key=lambda v: (-level[v], v))
        new_index = {old: new for new, old in enumerate(order)}
        vertices, params = [], {}
        for old in order:
            edges = [
                Edge(e.kind, new_index[e.ref], e.chain) if e.kind == "vertex" else e for e in vs[old].edges
            ]
            vertex = Vertex(vs[old].name, vs[old].op, edges, level[old])
            vertex.finish()
            vertices.append(vertex)
            params.update((e.ref, self.model.get_parameter(e.ref)) for e in edges if e.kind == "param")
        depth = level[order[0]] + 1
        return Plan(
            len(self.inputs), self.n_slots, self.consts, vertices, params, depth, output_shape, levelled
        )

    def insert_delays(self, nodes: list[int], level: dict[int, int]) -> None:
        """Identity value nodes along every edge that skips levels (``level`` gets theirs)."""
        vs = self.vertices
        delays: dict[int, list[int]] = {}  # source -> its identity nodes, one level apart below it
        for v in nodes:
            for k, e in enumerate(vs[v].edges):
                gap = level[e.ref] - level[v] - 1 if e.kind == "vertex" else 0
                if gap <= 0:
                    continue
                chain = delays.setdefault(e.ref, [])
                while len(chain) < gap:
                    source = chain[-1] if chain else e.ref
                    name = f"{vs[e.ref].name}.delay{len(chain) + 1}"
                    vs.append(Vertex(name, ops.Identity(), [Edge("vertex", source)]))
                    level[len(vs) - 1] = level[e.ref] - len(chain) - 1
                    chain.append(len(vs) - 1)
                vs[v].edges[k] = Edge("vertex", chain[gap - 1], e.chain)


def _select_stacked(stacked: _Stacked, index: Any) -> Any | None:
    """The item ``stacked[index]`` picks when the index selects one item along the stack dimension."""
    parts = index if isinstance(index, tuple) else (index,)
    d = stacked.dim
    if len(parts) <= d or not isinstance(parts[d], int):
        return None
    if any(p != slice(None) for j, p in enumerate(parts) if j != d):
        return None
    return stacked.items[parts[d]]


def build_plan(
    model: nn.Module,
    gm: fx.GraphModule,
    inputs: tuple[Tensor, ...],
    levelled: bool = True,
    value_nodes: str = "layers",
) -> Plan:
    """The plan of ``model`` (traced as ``gm``) for inputs shaped like ``inputs``.

    Arguments:
        levelled: False leaves out the identity nodes (to show that Z-IL needs them).
        value_nodes: "layers" folds the parameter-free single-operand operations into the
            prediction of their consumer (mu = W f(x), the papers' layered networks);
            "operations" gives every operation on a value node or parameter its own value
            node (the computational graphs of Salvatori et al. 2022).
    """
    if value_nodes not in VALUE_NODES:
        raise ValueError(f"value_nodes must be one of {VALUE_NODES}, got {value_nodes!r}")
    with torch.no_grad():
        return _Builder(model, gm, inputs, fold=value_nodes == "layers").run(levelled)
