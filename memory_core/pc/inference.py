"""Relaxation with a ``PCMemory``'s own weights: what the relaxations of ``relax.py`` read
(the weights' transposes and Gram matrix kept between recalls, the spectral norms, the step
sizes) and the calls into them (heavy ball, conjugate gradients), the sensory prediction and
the energy at a relaxed state.

``InferenceMixin`` is a part of ``PCMemory`` (``memory.py``), kept in a module of its own:
it holds no state, and reads the memory's attributes named in its annotations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..linalg import gram, uses_onednn  # x @ w.T via oneDNN on the CPU
from .config import PCConfig
from .energy import Network, energy, predict
from .relax import (
    POWER_MASKED,
    SpectralNorms,
    conjugate_gradients,
    gram_is_cheaper,
    heavy_ball,
    masked_spectral_sq,
    step_sizes,
)

__all__ = ["InferenceMixin"]


class InferenceMixin:
    """``PCMemory``'s relaxations of the latents for states x (B, D) (see ``memory.py``)."""

    config: PCConfig
    sizes: tuple[int, ...]
    dim: int
    weights: list[Tensor]
    biases: list[Tensor]
    prior_mean: Tensor
    restarts: int
    backtracks: int
    _act: Callable[[Tensor], Tensor]
    _norms: SpectralNorms
    _recall_cache: tuple | None

    # --- what the relaxations read ------------------------------------------------------
    def _network(self, transposed: list[Tensor]) -> Network:
        return Network(self.weights, self.biases, self.prior_mean, self._act, transposed)

    def _spectral_sq(self, l: int, warm: bool = False) -> float:
        """||W_l||_2^2 (``relax.SpectralNorms``: cold outside ``fit``, warm inside)."""
        return self._norms.sq(l, self.weights[l - 1], warm)

    def _recall_weights(self, onednn: bool, with_gram: bool) -> tuple[list[Tensor], Tensor | None]:
        """The weights as recall's messages read them, and the sensory Gram matrix, kept
        between calls until a weight changes.

        Returns W_l^T (n_{l-1}, n_l) for every layer (contiguous copies for oneDNN's
        linear, views for torch's matmul) and, with ``with_gram``, G = W_x^T W_x (H, H)
        (else whatever is kept, maybe None). A weight written in place (Adam) bumps its
        version, a replaced one is another object (held here, so ``is`` cannot see a
        reused id). Costs the weights' bytes again on oneDNN, plus H^2 for G.
        """
        cached, W = self._recall_cache, self.weights
        if (
            cached is not None
            and cached[0] == onednn
            and len(cached[1]) == len(W)
            and all(c is w and v == w._version for (c, v), w in zip(cached[1], W, strict=True))
        ):
            Wt, G = cached[2], cached[3]
        else:
            Wt, G = [w.T.contiguous() if onednn else w.T for w in W], None
        if with_gram and G is None:
            G = gram(Wt[-1])  # (H, H): exactly symmetric (so f G = f G^T, what linear computes)
        self._recall_cache = (onednn, [(w, w._version) for w in W], Wt, G)
        return Wt, G

    def _step_sizes(
        self, pi: tuple, lr: float, known: Tensor | None = None, warm: bool = False
    ) -> list[Tensor | float]:
        """``relax.step_sizes`` for these weights (per cue for the last layer when ``known``
        masks the sensory layer)."""
        L = len(self.sizes)
        norms = [0.0] + [math.sqrt(self._spectral_sq(l, warm)) for l in range(1, L)]
        masked = None
        if known is not None:
            w = self.weights[-1]
            self._spectral_sq(L - 1)
            wt = self._recall_weights(uses_onednn(w), with_gram=False)[0][-1]  # (H, D): W_x^T
            masked = masked_spectral_sq(w, wt, self._norms.vector(L - 1), known, POWER_MASKED)
        return step_sizes(pi, lr, norms, masked)

    # --- the relaxations -------------------------------------------------------------------
    def _relax(
        self,
        x: Tensor,
        known: Tensor | None,
        steps: int,
        lr: float,
        pi: tuple,
        trace: list[float] | None = None,
        use_gram: bool | None = None,
        momentum: float | None = None,
        warm: bool = False,
        reuse: bool = False,
    ) -> list[Tensor]:
        """Heavy-ball relaxation (``relax.heavy_ball``) of x (B, D), known (B, D) 1.0 / 0.0 or
        None, with these weights.

        Arguments:
            use_gram: force (True) or forbid (False) the Gram-matrix message; None picks
                the cheaper. Only for a fully clamped sensory layer.
            momentum: heavy-ball momentum (None: ``config.momentum``).
            warm: inside ``fit``: step sizes from warm-started power iteration.
            reuse: recall: the weights' transposes and the Gram matrix are kept between
                calls (``_recall_weights``), and the Gram message is then used at any batch.

        Returns:
            the latents [x_0 (B, n_0), ..., x_{L-2} (B, n_{L-2})] after relaxation.
        """
        onednn = uses_onednn(x)
        G = None
        if reuse:
            Wt, G = self._recall_weights(onednn, with_gram=known is None and use_gram is not False)
        else:
            Wt = [w.T.contiguous() if onednn else w.T for w in self.weights]  # W_l^T: (n_{l-1}, n_l)
        if use_gram is None:
            H, D = self.sizes[-2], self.dim
            use_gram = known is None and (reuse or gram_is_cheaper(H, D, x.shape[0], steps))
        elif use_gram and known is not None:
            raise ValueError("the Gram-matrix message needs a fully clamped sensory layer")
        if use_gram and G is None:
            G = gram(Wt[-1])  # (H, H): W^T W made for this call
        lrs = self._step_sizes(pi, lr, known, warm)
        momentum = self.config.momentum if momentum is None else momentum
        xs, restarts, backtracks = heavy_ball(
            self._network(Wt), x, known, steps, lrs, pi, momentum, G if use_gram else None, trace
        )
        self.restarts += restarts
        self.backtracks += backtracks
        return xs

    def _relax_cg(
        self,
        x: Tensor,
        known: Tensor | None,
        steps: int,
        pi: tuple,
        trace: list[float] | None = None,
        tol: float = 0.0,
    ) -> list[Tensor]:
        """Conjugate-gradient relaxation (``relax.conjugate_gradients``) with these weights."""
        Wt = self._recall_weights(uses_onednn(x), with_gram=False)[0]
        P = self._step_sizes(pi, 1.0, known)  # diagonal preconditioner, per layer (per cue for the last)
        return conjugate_gradients(self._network(Wt), x, known, steps, P, pi, trace, tol)

    def _predict(self, xs: list[Tensor]) -> Tensor:
        """(B, D) the sensory prediction mu_{L-1} from the relaxed latents."""
        return predict(self._network([]), xs)

    def _state_energy(
        self, xs: list[Tensor], x: Tensor, known: Tensor | None, pi: tuple
    ) -> tuple[Tensor, list[Tensor | None], list[Tensor]]:
        """(E (B,), errors eps_1 .. eps_{L-1}, f(x_l)) at a relaxed state, the sensory error
        computed directly."""
        Wt = [w.T for w in self.weights]
        f, df = [torch.empty_like(v) for v in xs], [torch.empty_like(v) for v in xs]
        e, eps, _ = energy(self._network(Wt), xs, x, known, pi, f, df)
        return e, eps, f
