"""Predictive coding on arbitrary graphs (Salvatori et al., NeurIPS 2022).

"Learning on Arbitrary Graph Topologies via Predictive Coding": every vertex i of a
directed graph holds a value x_i and predicts its children through weighted edges,

    mu_i = sum_j theta_ji f(x_j) + b_i,    eps_i = x_i - mu_i,    E = 1/2 sum_i eps_i^2,

cycles included. The first ``dim`` vertices are sensory (they hold a pattern's entries),
the rest are hidden. Inference moves the free vertices down the energy gradient

    dE/dx_i = eps_i - f'(x_i) sum_k theta_ik eps_k,

and learning is local: dtheta_ji = -dE/dtheta_ji = eps_i f(x_j) (only on edges), db_i = eps_i.

Before inference, free vertices take their own predictions a few times (``init_sweeps``),
so that inference starts near zero error, as a forward pass does on a hierarchy.

One trained graph does several jobs by clamping different vertices: clamp an image and
read the label vertices (classification), clamp the label (generation), clamp part of an
image (completion), or start from a noisy image (denoising).

The weights are a dense (N, N) matrix masked by the adjacency, so every step is two
batched (B, N) x (N, N) matmuls. That is right for graphs of a few thousand vertices;
memory grows as N^2 whatever the density.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import pcgraph_checkpoint
from .checks import EmptyMemoryError, check_batch, check_dtype, check_mask, resolve_device
from .graphs import as_adjacency, fully_connected, hierarchy, layered, random_sparse
from .interrupt import poll
from .pc.energy import ACTIVATIONS, activation_pair  # f and f', shared with PCMemory

__all__ = [
    "ACTIVATIONS",
    "TOPOLOGIES",
    "PCGraph",
    "PCGraphConfig",
    "as_adjacency",
    "fully_connected",
    "hierarchy",
    "layered",
    "random_sparse",
]

TOPOLOGIES = ("fully_connected", "layered", "random", "custom")


# --- the model ------------------------------------------------------------------------------
# PCGraphConfig's keys before it took PCMemory's names for the same knobs: configs stored
# with them (checkpoints, the service's memories) still load (``PCGraphConfig.from_dict``).
LEGACY_KEYS = {
    "inference_steps": "train_steps",
    "inference_lr": "infer_lr",
    "inference_momentum": "momentum",
    "lr": "weight_lr",
}


def upgrade_keys(config: dict) -> dict:
    """``config`` with ``LEGACY_KEYS`` renamed; ValueError when a knob is given under both names."""
    out = dict(config)
    for old, new in LEGACY_KEYS.items():
        if old in out:
            if new in out:
                raise ValueError(f"{old!r} is the old name of {new!r}: give one of them")
            out[new] = out.pop(old)
    return out


@dataclass(frozen=True)
class PCGraphConfig:
    """Constructor arguments of ``PCGraph`` (JSON-able: what a checkpoint and the service keep).

    Knobs that ``PCMemory`` has too carry ``PCConfig``'s names (``train_steps``,
    ``infer_lr``, ``momentum``, ``weight_lr``, ``recall_steps``, ``epochs``, ``batch_size``,
    ``seed``); ``from_dict`` also takes their old names (``LEGACY_KEYS``). Validated on
    construction.

    Attributes:
        dim: sensory vertices (the pattern's entries); vertices 0..dim-1.
        hidden: hidden vertices: a count, or layer sizes bottom to top for "layered".
        topology: "fully_connected", "layered" (generative: each layer predicts the one
            below, the sensory layer at the bottom), "random" (each edge with probability
            ``density``) or "custom" (an adjacency passed to the constructor).
        density: edge probability of the random topology.
        activation: f, one of ``ACTIVATIONS``.
        train_steps: T, inference steps per training batch.
        infer_lr: inference rate gamma (training and recall).
        momentum: heavy-ball momentum of the inference steps (0: plain gradient descent
            on E, as in the paper).
        init_sweeps: before inference, free vertices are set to their predictions this
            many times (x_free <- mu), so that inference starts near zero error (a forward
            pass on a hierarchy; 0: hidden vertices start at 0, unknown sensory ones at
            their bias).
        recall_steps: inference steps of retrieve / energy.
        weight_lr: Adam learning rate of the weights.
        weight_decay: L2 on the weights (Adam's, on edges only).
        batch_size: patterns per weight update.
        epochs: default epochs of ``fit``.
        init_std: weights start N(0, init_std^2 / in-degree).
        seed: initial weights and the shuffling of ``fit``.
    """

    dim: int
    hidden: int | tuple[int, ...] = 256
    topology: str = "fully_connected"
    density: float = 0.1
    activation: str = "tanh"
    train_steps: int = 20
    infer_lr: float = 0.1
    momentum: float = 0.0
    init_sweeps: int = 3
    recall_steps: int = 200
    weight_lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 10
    init_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.hidden, list):
            object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}; got {self.topology!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")
        sizes = self.hidden_sizes
        if any(s < 0 for s in sizes) or (self.topology == "layered" and any(s < 1 for s in sizes)):
            raise ValueError(f"hidden sizes must be positive, got {self.hidden!r}")
        self._check_numbers()

    def _check_numbers(self) -> None:
        for name in ("train_steps", "recall_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("init_sweeps", "epochs", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("infer_lr", "weight_lr", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        for name, top in (("infer_lr", 10.0), ("weight_lr", 1.0), ("weight_decay", 1.0), ("init_std", 100.0)):
            if not getattr(self, name) <= top:  # far past any useful value: beyond it training diverges
                raise ValueError(f"{name} must be at most {top:g}, got {getattr(self, name)}")
        if self.topology == "random" and not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        # fit seeds a generator with seed + trained_count, which must fit torch's 64 bits.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2^32), got {self.seed!r}")

    @classmethod
    def from_dict(cls, data: dict) -> PCGraphConfig:
        """A config from stored JSON, old key names (``LEGACY_KEYS``) included."""
        data = upgrade_keys(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PCGraphConfig keys: {unknown}")
        return cls(**data)

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)

    @property
    def n_vertices(self) -> int:
        return self.dim + sum(self.hidden_sizes)


def _build_adjacency(cfg: PCGraphConfig) -> Tensor:
    n = cfg.n_vertices
    if cfg.topology == "fully_connected":
        return fully_connected(n)
    if cfg.topology == "layered":
        return layered([cfg.dim, *cfg.hidden_sizes], direction="down")
    if cfg.topology == "random":
        return random_sparse(n, cfg.density, seed=cfg.seed)
    raise ValueError("topology 'custom' needs an adjacency")


@dataclass
class _Adam:
    """Adam on hand-computed gradients (a few lines; no autograd, no optimiser objects)."""

    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    step: int = 0
    moments: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def update(self, name: str, param: Tensor, grad: Tensor) -> None:
        """param -= lr * m_hat / (sqrt(v_hat) + eps), in place; call ``tick`` once per step first."""
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        m, v = self.moments.get(name) or (torch.zeros_like(param), torch.zeros_like(param))
        b1, b2 = self.betas
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.moments[name] = (m, v)
        m_hat = m / (1 - b1**self.step)
        v_hat = v / (1 - b2**self.step)
        param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))

    def tick(self) -> None:
        self.step += 1


class PCGraph:
    """A predictive-coding network on any directed graph (Salvatori et al. 2022).

    Arguments:
        dim: sensory vertices = the length D of a pattern.
        hidden, topology, density, activation, train_steps, infer_lr, momentum,
        init_sweeps, recall_steps, weight_lr, weight_decay, batch_size, epochs, init_std,
        seed: see ``PCGraphConfig``.
        adjacency: (N, N) dense or sparse, A[j, i] = edge j -> i; only with
            topology="custom", N = dim + hidden.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        dtype: float32 (or float64; float16/bfloat16 on a GPU).
        **legacy: the old names of knobs (``LEGACY_KEYS``: inference_steps, inference_lr,
            inference_momentum, lr), with a DeprecationWarning.

    Example:
        >>> g = PCGraph(dim=794, hidden=256, topology="fully_connected")
        >>> history = g.fit(patterns, epochs=5)          # (N, 794): [image ; one-hot label]
        >>> out = g.retrieve(cue, mask=image_known)      # clamp the image, infer the label
    """

    def __init__(
        self,
        dim: int,
        hidden: int | Sequence[int] = 256,
        topology: str = "fully_connected",
        *,
        density: float = 0.1,
        activation: str = "tanh",
        train_steps: int = 20,
        infer_lr: float = 0.1,
        momentum: float = 0.0,
        init_sweeps: int = 3,
        recall_steps: int = 200,
        weight_lr: float = 3e-4,
        weight_decay: float = 0.0,
        batch_size: int = 64,
        epochs: int = 10,
        init_std: float = 0.1,
        seed: int = 0,
        adjacency: Tensor | None = None,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float32,
        **legacy: float,
    ) -> None:
        hidden = int(hidden) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
        config = PCGraphConfig(
            dim=int(dim),
            hidden=hidden,
            topology=topology,
            density=float(density),
            activation=activation,
            train_steps=int(train_steps),
            infer_lr=float(infer_lr),
            momentum=float(momentum),
            init_sweeps=int(init_sweeps),
            recall_steps=int(recall_steps),
            weight_lr=float(weight_lr),
            weight_decay=float(weight_decay),
            batch_size=int(batch_size),
            epochs=int(epochs),
            init_std=float(init_std),
            seed=int(seed),
        )
        if legacy:
            unknown = sorted(set(legacy) - set(LEGACY_KEYS))
            if unknown:
                raise TypeError(f"unknown PCGraph arguments: {unknown}")
            warnings.warn(
                f"PCGraph: {sorted(legacy)} are the old names of {[LEGACY_KEYS[k] for k in sorted(legacy)]}",
                DeprecationWarning,
                stacklevel=2,
            )
            config = replace(config, **{LEGACY_KEYS[k]: v for k, v in legacy.items()})
        if (adjacency is not None) != (topology == "custom"):
            raise ValueError("pass an adjacency exactly when topology='custom'")
        adj = (
            as_adjacency(adjacency, config.n_vertices) if adjacency is not None else _build_adjacency(config)
        )
        self._setup(config, adj, device, dtype)

    def _setup(
        self, config: PCGraphConfig, adj: Tensor, device: str | torch.device, dtype: torch.dtype
    ) -> None:
        """Fresh weights N(0, init_std^2 / in-degree) on the edges, zero biases."""
        self.config = config
        self.device = resolve_device(device)
        self.dtype = check_dtype(dtype, self.device)
        self.act = partial(activation_pair, ACTIVATIONS[config.activation])  # x -> (f(x), f'(x))
        n = config.n_vertices
        gen = torch.Generator().manual_seed(config.seed)
        fan_in = adj.sum(dim=0).clamp(min=1).to(torch.float64)  # (N,) parents of each vertex
        w = torch.randn(n, n, generator=gen, dtype=torch.float64) * (config.init_std / fan_in.sqrt())
        self.adjacency = adj.to(self.device)  # (N, N) bool
        self.weights = (w * adj).to(self.device, self.dtype)  # (N, N), W[j, i] = theta_ji
        self.bias = torch.zeros(n, device=self.device, dtype=self.dtype)  # (N,)
        self._edge_mask = self.adjacency.to(self.dtype)  # (N, N) 0/1, keeps non-edges at 0
        self._opt = _Adam(config.weight_lr, config.weight_decay)
        self.trained_count = 0  # patterns seen by fit (0 = untrained)

    # --- sizes and state ----------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def n_vertices(self) -> int:
        return self.config.n_vertices

    def to(self, device: str | torch.device) -> PCGraph:
        """Move weights (and the optimiser's moments) to ``device`` in place; returns self."""
        self.device = resolve_device(device)
        check_dtype(self.dtype, self.device)
        self.adjacency = self.adjacency.to(self.device)
        self.weights = self.weights.to(self.device)
        self.bias = self.bias.to(self.device)
        self._edge_mask = self._edge_mask.to(self.device)
        self._opt.moments = {
            k: (m.to(self.device), v.to(self.device)) for k, (m, v) in self._opt.moments.items()
        }
        return self

    def __repr__(self) -> str:
        c = self.config
        return (
            f"PCGraph(dim={c.dim}, hidden={c.hidden!r}, topology={c.topology!r}, "
            f"edges={int(self.adjacency.sum())}, device={str(self.device)!r}, trained={self.trained_count})"
        )

    # --- the energy and its gradient (the hot loop) -----------------------------------------
    def errors(self, x: Tensor) -> Tensor:
        """eps = x - mu with mu = f(x) W + b: (B, N) -> (B, N)."""
        return x - torch.addmm(self.bias, self.act(x)[0], self.weights)

    def state_energy(self, x: Tensor) -> Tensor:
        """E (B,) of full states x (B, N): 1/2 sum_i eps_i^2, no inference."""
        return 0.5 * (self.errors(x) ** 2).sum(dim=1)

    def energy_gradient(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(f(x), eps, dE/dx) at states x (B, N), each (B, N).

        dE/dx_i = eps_i - f'(x_i) sum_k theta_ik eps_k: a vertex's own error, minus the
        errors of the children it predicts, fed back through the same edges.
        """
        fx, dfx = self.act(x)  # (B, N)
        eps = x - torch.addmm(self.bias, fx, self.weights)  # (B, N)
        return fx, eps, eps - dfx * (eps @ self.weights.T)

    def weight_gradients(self, fx: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """dE/dW (N, N) and dE/db (N,), averaged over the batch: -eps_i f(x_j) on edges only."""
        grad_w = -(fx.T @ eps) / fx.shape[0] * self._edge_mask  # (N, N)
        return grad_w, -eps.mean(dim=0)

    def _relax(self, x: Tensor, free: Tensor, steps: int) -> tuple[Tensor, Tensor, Tensor]:
        """``steps`` inference steps on E over the free vertices.

        Arguments:
            x: (B, N) start state (clamped vertices hold their values).
            free: (B, N) 0/1 in x's dtype, 1 = free vertex.

        Returns:
            (x, f(x), eps) at the end, each (B, N).
        """
        step = -self.config.infer_lr * free  # (B, N): -gamma on free vertices, 0 on clamped
        mom = self.config.momentum
        velocity = torch.zeros_like(x)  # (B, N) heavy-ball momentum of the inference dynamics
        for _ in range(steps):
            poll()  # a caller may cancel here (memory_core.interrupt)
            _, _, grad = self.energy_gradient(x)  # (B, N)
            if mom:
                velocity = torch.add(grad, velocity, alpha=mom)
                grad = velocity
            x = torch.addcmul(x, step, grad)
        fx, _ = self.act(x)
        return x, fx, x - torch.addmm(self.bias, fx, self.weights)

    def _start(self, cue: Tensor, known: Tensor | None) -> tuple[Tensor, Tensor]:
        """Initial state (B, N) and free-vertex indicator (B, N), 1 = free.

        Known sensory entries are clamped to the cue; unknown ones start at their bias (the
        learned mean) and hidden ones at 0; then ``init_sweeps`` sweeps x_free <- mu(x).
        With no mask (known None) every sensory vertex is free and starts at the cue.
        """
        batch = cue.shape[0]
        x = torch.zeros(batch, self.n_vertices, device=self.device, dtype=self.dtype)  # (B, N)
        free = torch.ones_like(x)
        if known is None:
            x[:, : self.dim] = cue
            free[:, : self.dim] = 0  # held at the cue during the sweeps, freed after them
        else:
            k = known.to(self.dtype)  # (B, D)
            x[:, : self.dim] = k * cue + (1 - k) * self.bias[: self.dim]
            free[:, : self.dim] = 1 - k
        for _ in range(self.config.init_sweeps):
            poll()
            mu = torch.addmm(self.bias, self.act(x)[0], self.weights)  # (B, N)
            x = torch.addcmul(x, free, mu - x)  # free vertices take their prediction
        if known is None:
            free[:, : self.dim] = 1
        return x, free

    # --- learning ---------------------------------------------------------------------------
    def fit(
        self,
        patterns: Tensor,
        epochs: int | None = None,
        progress: bool = True,
        callback: Callable[[dict], bool | None] | None = None,
    ) -> list[dict]:
        """Train on patterns by inference learning; continues from the current weights.

        Per mini-batch: clamp the sensory vertices to the patterns, start the hidden ones
        at their predictions (``init_sweeps``), run ``train_steps`` inference steps,
        then one Adam step on the weights from the local gradients -eps_i f(x_j) (edges
        only) and -eps_i (biases). The first call also sets the sensory biases to the
        patterns' mean. ``trained_count`` grows by len(patterns) once an epoch has run.

        Arguments:
            patterns: (N, D) float.
            epochs: passes over the patterns (None: the config's).
            progress: show a tqdm bar.
            callback: called after each epoch with {"epoch", "epochs", "energy"}; returning
                False stops training.

        Returns:
            the history: one {"epoch", "epochs", "energy"} per epoch run, energy = mean E per
            pattern at the end of inference (before the weight update).
        """
        patterns = check_batch(patterns, self.dim, "patterns").to(self.device, self.dtype)
        epochs = self.config.epochs if epochs is None else int(epochs)
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if self.trained_count == 0:
            self.bias[: self.dim] = patterns.mean(dim=0)  # sensory biases start at the data mean
        gen = torch.Generator().manual_seed(self.config.seed + self.trained_count)
        n, bs = patterns.shape[0], self.config.batch_size
        history: list[dict] = []
        bar = tqdm(range(epochs), desc="pcgraph fit", unit="epoch", disable=not progress)
        for epoch in bar:
            order = torch.randperm(n, generator=gen).to(self.device)
            total = 0.0
            for start in range(0, n, bs):
                poll()
                batch = patterns[order[start : start + bs]]  # (b, D)
                x, free = self._start(batch, torch.ones_like(batch, dtype=torch.bool))
                x, fx, eps = self._relax(x, free, self.config.train_steps)
                total += float(0.5 * (eps**2).sum())
                self._learn(fx, eps)
            record = {"epoch": epoch + 1, "epochs": epochs, "energy": total / n}
            history.append(record)
            bar.set_postfix(energy=f"{record['energy']:.4g}")
            stop = callback is not None and callback(record) is False
            self.trained_count += n if epoch == 0 else 0  # trained once an epoch has run
            if stop:
                break
        return history

    def _learn(self, fx: Tensor, eps: Tensor) -> None:
        """One Adam step from the local gradients (fx = f(x), eps: (B, N) at the end of inference)."""
        grad_w, grad_b = self.weight_gradients(fx, eps)
        self._opt.tick()
        self._opt.update("weights", self.weights, grad_w)
        self._opt.update("bias", self.bias, grad_b)
        self.weights.mul_(self._edge_mask)  # keep non-edges exactly 0 (Adam's weight decay included)

    # --- recall -----------------------------------------------------------------------------
    def _prepare(self, cue: Tensor, mask: Tensor | None, name: str) -> tuple[Tensor, Tensor | None]:
        if self.trained_count == 0:
            raise EmptyMemoryError("the graph is untrained: fit it on patterns before recalling")
        cue = check_batch(cue, self.dim, name).to(self.device, self.dtype)
        if mask is not None:
            mask = check_mask(mask, cue.shape).to(self.device)
        return cue, mask

    def infer(self, cue: Tensor, mask: Tensor | None = None, steps: int | None = None) -> Tensor:
        """The whole relaxed state (B, N): sensory vertices first, then hidden ones.

        Arguments:
            cue: (B, D); entries where mask is False may hold anything.
            mask: (B, D) bool, True = known (clamped); None: no vertex is clamped and the
                sensory vertices start from the cue (denoising).
            steps: inference steps (None: the config's recall_steps).
        """
        cue, mask = self._prepare(cue, mask, "cue")
        x, free = self._start(cue, mask)
        x, _, _ = self._relax(x, free, self.config.recall_steps if steps is None else int(steps))
        return x

    def retrieve(self, cue: Tensor, mask: Tensor | None = None, steps: int | None = None) -> Tensor:
        """Complete or clean a pattern: clamp the known entries, infer the rest.

        Arguments:
            cue: (B, D). With a mask, entries where it is False may hold anything.
            mask: (B, D) bool, True = known: those entries are returned unchanged and the
                others are inferred. None: the cue is noisy, nothing is clamped, and the
                graph relaxes from it.
            steps: inference steps (None: the config's recall_steps).

        Returns:
            (B, D) the sensory vertices after inference.
        """
        return self.infer(cue, mask, steps)[:, : self.dim]

    def energy(self, x: Tensor, mask: Tensor | None = None, steps: int | None = None) -> Tensor:
        """E (B,) of the patterns x after inference on what is not clamped.

        The sensory vertices are clamped to x (only the known ones when a mask is given);
        hidden (and unknown) vertices relax first, so this is the energy the graph assigns
        to the pattern: low for what it has learned.
        """
        x, mask = self._prepare(x, mask, "x")
        state, free = self._start(x, torch.ones_like(x, dtype=torch.bool) if mask is None else mask)
        state, _, eps = self._relax(state, free, self.config.recall_steps if steps is None else int(steps))
        return 0.5 * (eps**2).sum(dim=1)

    # --- checkpoints ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write weights, biases, adjacency and config to one safetensors file, atomically.

        A crash leaves either the old checkpoint or the new one, never a torn file
        (``files.atomic_write``).
        """
        pcgraph_checkpoint.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> PCGraph:
        """Read a checkpoint written by ``save`` (onto ``device``); ValueError for a file that is
        not one, whose tensors do not fit its config, or that holds non-finite numbers."""
        return pcgraph_checkpoint.load(cls, PCGraphConfig, path, device)
