"""A memory index for a trained ``PCMemory``: recall that lands on stored patterns.

Salvatori et al. describe their network as a generative model with the hippocampus as a
memory index. ``PCMemory.retrieve`` (the paper's pure variant) relaxes the latents on the
cue and reads the sensory prediction: on real images beyond about 100 patterns that
prediction is a blend, several times less noisy than the cue but not the stored image
(results/pc_real_images.md). ``PCIndex`` adds the index:

- ``build``: training infers every stored pattern's latent state anyway; the index keeps
  it, for every latent layer (codes z_i (N, n_0), h_i (N, n_1), ...), from one
  relaxation of each stored pattern clamped with training's precisions.
- ``recall``: the network infers the cue's latents as the pure variant does (one round
  of noisy recall, or completion's relaxation for a partial cue). A Hopfield search in
  the top latent space proposes the ``candidates`` stored codes nearest the cue's top
  latent (euclidean); the network's energy of the cue at each candidate's stored latent
  state (its sensory error on the cue's known entries) picks one, a max separation on
  -E; the network then predicts the sensory layer from that latent state (mu_x =
  W f(h) + b). For a noisy cue this is one round of F; F repeats with the prediction as
  the new cue until it stops moving (``PCIndexConfig.tol``: 2 rounds once it lands). A
  partial cue's known entries stay as given, so its one round is F's fixed point.

Everything stays predictive coding: inference is the network's own local relaxation; the
index is one more layer of N units, each bound in one shot (local, Hebbian) to the
latent state inference settled to for its pattern, and the unit that wins is the one
whose state gives the cue the lowest prediction error. The output is the network's
sensory prediction, never a copy of a stored pattern; how far it is from the stored one
is the network's own fit (median MSE 0.0005 for 1000 Fashion-MNIST images at width 1024).
Why not the latent distance alone: from half an image the latents are loose along the
directions the known rows barely see, and the nearest code was the right one for 98.5% of
half images but 55% of quarter images (same model); the known entries' error decides
that.

Each recall says whether its output is a stored pattern's reconstruction, by a
likelihood-ratio test on the cue's known entries: is the cue the landed-on pattern plus
white noise? The free reconstruction (the pure variant's prediction from the same
latents) absorbs a fraction ``absorbed`` of white noise, measured at ``build`` on noisy
copies of stored patterns (44% for 1000 Fashion-MNIST images, width 1024), so
SSE_free / (1 - absorbed) estimates the cue's noise; the test passes when
SSE_matched <= (1 + ``noise_margin``) x that + ``fit_margin`` x (that pattern's own fit
MSE) x k, k the known entries. Measured on that model: stored patterns under noise of
std 0.2 score 0.96-1.07 of the noise estimate (10th-90th percentile), unseen images
1.25-1.89; a partial cue's known entries are exact, so there the fit margin decides.
When the runner-up candidate passes the test too, two stored patterns explain the cue
(a quarter of a Fashion-MNIST image is often mostly background, two near-copies under
strong noise): the answer is still the better one, flagged not ``unique``. A cue that
fails is taken for something not stored and gets the pure variant's reconstruction (what
a generative model offers for unseen images; results/pc_real_images.md). At strong noise
(variance 0.2) an unseen image close to a stored one cannot always be told from it
(unseen 1.05-1.23 there).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .checks import EmptyMemoryError, check_batch, check_mask
from .hopfield import UniversalHopfield
from .pc import PCMemory

__all__ = ["IndexRecall", "PCIndex", "PCIndexConfig"]


@dataclass(frozen=True)
class PCIndexConfig:
    """How the index separates and when it answers with a stored pattern.

    Attributes:
        candidates: stored codes, nearest the cue's top latent, whose energy is compared.
        noise_margin, fit_margin: the stored-pattern test (module docstring): the matched
            prediction's SSE on the known entries may exceed the cue's estimated noise by
            this fraction, plus this many times that stored pattern's own fit MSE per entry.
            ``noise_margin=None``: always the stored pattern (a pure lookup memory).
        calibration_std: the white noise ``build`` measures the absorbed fraction with.
        max_rounds: at most this many rounds of F for a whole (noisy) cue.
        tol: F stops for a cue once its output moved by at most this (mean squared).
    """

    candidates: int = 16
    noise_margin: float | None = 0.15
    fit_margin: float = 2.0
    calibration_std: float = 0.2
    max_rounds: int = 10
    tol: float = 1e-6

    def __post_init__(self) -> None:
        if not (isinstance(self.candidates, int) and self.candidates >= 1):
            raise ValueError(f"candidates must be an integer >= 1, got {self.candidates!r}")
        if self.noise_margin is not None and not self.noise_margin >= 0:
            raise ValueError(f"noise_margin must be >= 0 or None, got {self.noise_margin!r}")
        if not self.calibration_std > 0:
            raise ValueError(f"calibration_std must be > 0, got {self.calibration_std!r}")
        if not self.fit_margin >= 0:
            raise ValueError(f"fit_margin must be >= 0, got {self.fit_margin!r}")
        if self.max_rounds < 1 or self.tol < 0:
            raise ValueError("max_rounds must be >= 1 and tol >= 0")


@dataclass
class IndexRecall:
    """One batch of index recalls.

    Attributes:
        output: (B, D) the network's sensory prediction (known entries of a partial cue
            as given).
        nearest: (B,) int64, the stored pattern (row) whose latent state the cue landed on.
        distance: (B,) the distance from the cue's top latent to that pattern's code, in
            units of the codes' median neighbour distance.
        evidence: (B,) SSE_matched / ((1 + noise_margin) x the cue's estimated noise + fit
            allowance) on the cue's known entries: <= 1 passes the stored-pattern test.
        runner_up: (B,) the same for the second-best candidate.
        stored: (B,) bool: the output is that stored pattern's reconstruction (the cue
            passes the test; else the pure variant's reconstruction of something not stored).
        unique: (B,) bool: stored, and the runner-up fails the test: no other stored
            pattern explains the cue (a quarter of an image often does not single one out).
        rounds: (B,) int64 rounds of F each cue took (1 for partial cues).
    """

    output: Tensor
    nearest: Tensor
    distance: Tensor
    evidence: Tensor
    runner_up: Tensor
    stored: Tensor
    unique: Tensor
    rounds: Tensor


class PCIndex:
    """The stored patterns' latent codes for a ``PCMemory``, and recall through them.

    Example:
        >>> pc = PCMemory(sizes=[256, 1024, 784]); pc.fit(patterns)
        >>> index = PCIndex(pc); index.build(patterns)      # after every fit
        >>> got = index.recall(noisy)                       # got.output, got.stored, got.nearest
        >>> got = index.recall(cue, mask=known)
    """

    def __init__(self, pc: PCMemory, config: PCIndexConfig | None = None, **overrides) -> None:
        self.pc = pc
        self.config = config or PCIndexConfig(**overrides)
        if config is not None and overrides:
            raise TypeError("pass either config or keyword overrides, not both")
        self.codes: list[Tensor] | None = None  # per latent layer: (N, n_l)
        self.spacing = 1.0  # d_nn: median distance from a top code to its nearest other code
        self.fit_mse = 0.0  # median MSE between a stored pattern and its code's prediction
        self.fit_errors: Tensor | None = None  # (N,) each stored pattern's own fit MSE
        self.predictions: Tensor | None = None  # (N, D) the network's prediction from each code
        self.absorbed = 0.0  # fraction of white noise the free reconstruction absorbs
        self._lookup: UniversalHopfield | None = None

    def __len__(self) -> int:
        return 0 if self.codes is None else self.codes[0].shape[0]

    @torch.no_grad()
    def build(self, patterns: Tensor) -> None:
        """Keep the latent codes of the stored ``patterns`` (N, D) (those ``pc`` was fit on)."""
        if not self.pc.is_trained:
            raise EmptyMemoryError("fit the PC memory before building its index")
        patterns = check_batch(patterns, self.pc.dim, "patterns").to(self.pc.device, self.pc.dtype)
        size = self.pc.config.max_batch
        parts = [
            self.pc.infer_latents(patterns[i : i + size], purpose="code")
            for i in range(0, len(patterns), size)
        ]
        self.codes = [torch.cat(layer) for layer in zip(*parts, strict=True)]
        top = self.codes[0]
        self.predictions = self.pc.predict_sensory(self.codes)
        self.fit_errors = (self.predictions - patterns).square().mean(1)
        self.fit_mse = float(self.fit_errors.median())
        self._lookup = UniversalHopfield("euclidean", "max", device=self.pc.device, dtype=self.pc.dtype)
        self._lookup.store(top)  # search only: the k codes nearest a cue's top latent
        if len(top) > 1:  # each code's nearest other code (chunked: no (N, N) matrix)
            nearest_other = -self._lookup.search(top, k=2)[0][:, 1]
            self.spacing = float(nearest_other.median().clamp_min(1e-12))
        sample = patterns[:64]  # white noise through the pure variant: how much of it passes
        gen = torch.Generator(device="cpu").manual_seed(0)
        std = self.config.calibration_std
        noisy = sample + std * torch.randn(sample.shape, generator=gen, dtype=sample.dtype).to(sample.device)
        free = self.pc.predict_sensory(self.pc.infer_latents(noisy))
        kept = float((noisy - free).square().sum(1).mean()) / (std**2 * sample.shape[1])
        self.absorbed = min(max(1.0 - kept, 0.0), 0.9)

    @torch.no_grad()
    def recall(self, cue: Tensor, mask: Tensor | None = None) -> IndexRecall:
        """Recall from noisy (mask None) or partial cues (B, D); see the module docstring.
        Cues go through in chunks of the memory's ``max_batch``."""
        if self._lookup is None:
            raise EmptyMemoryError("the index is empty: call build(patterns) after fit")
        cue = check_batch(cue, self.pc.dim, "cue").to(self.pc.device, self.pc.dtype)
        if mask is not None:
            mask = check_mask(mask, cue.shape).to(self.pc.device)
        size = self.pc.config.max_batch
        parts = []
        for i in range(0, cue.shape[0], size):
            c = cue[i : i + size]
            parts.append(
                self._recall_noisy(c) if mask is None else self._recall_partial(c, mask[i : i + size])
            )
        return IndexRecall(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(IndexRecall)))

    def _separate(
        self, latents: list[Tensor], cue: Tensor, mask: Tensor | None
    ) -> tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor]:
        """The stored latent state a cue lands on: (its latents, its row (B,), the distance
        (B,) of the cue's top latent to its code in units of d_nn, and the known entries'
        SSE (B, 2) at it and at the runner-up candidate (inf when there is none), and those
        two candidates' rows (B, 2))."""
        k = min(self.config.candidates, len(self))
        scores, rows = self._lookup.search(latents[0], k=k)  # (B, k), euclidean: -distance
        known = None if mask is None else mask.to(cue.dtype)
        energy = torch.empty_like(scores)  # (B, k) sensory energy of the known entries at each candidate
        for j in range(k):  # one (B, D) candidate at a time: bounded memory at any batch
            err = cue - self.predictions[rows[:, j]]
            energy[:, j] = (err if known is None else err * known).square().sum(1)
        best, order = energy.topk(min(2, k), dim=1, largest=False)  # (B, 2): the best two, lowest first
        two = rows.gather(1, order)
        if k == 1:
            best = torch.cat([best, torch.full_like(best, float("inf"))], dim=1)
            two = torch.cat([two, two], dim=1)
        pick = order[:, :1]
        nearest = two[:, 0]
        return (
            [c[nearest] for c in self.codes],
            nearest,
            -scores.gather(1, pick)[:, 0] / self.spacing,
            best,
            two,
        )

    def _recall_noisy(self, cue: Tensor) -> IndexRecall:
        cfg = self.config
        current = cue.clone()
        B = cue.shape[0]
        rounds = torch.zeros(B, dtype=torch.long, device=cue.device)
        active = torch.arange(B, device=cue.device)
        for step in range(cfg.max_rounds):
            sub = current[active]
            latents = self.pc.infer_latents(sub)
            matched, near, dist, sse, two = self._separate(latents, sub, None)
            out = self.pc.predict_sensory(matched)
            if step == 0:  # the cue itself: is it a stored pattern?
                nearest, distance = near, dist
                evidence = self._evidence(cue, None, sse, two, self.pc.predict_sensory(latents))
            moving = (out - sub).square().mean(1) > cfg.tol
            current[active] = out
            rounds[active] += 1
            active = active[moving]
            if len(active) == 0:
                break
        stored = evidence[:, 0] <= 1.0
        far = (~stored).nonzero().squeeze(1)
        if len(far):  # not a stored pattern: the pure variant's reconstruction
            current[far] = self.pc.retrieve(cue[far])
        unique = stored & (evidence[:, 1] > 1.0)
        return IndexRecall(current, nearest, distance, evidence[:, 0], evidence[:, 1], stored, unique, rounds)

    def _recall_partial(self, cue: Tensor, mask: Tensor) -> IndexRecall:
        latents = self.pc.infer_latents(cue, mask=mask)
        matched, nearest, distance, sse, two = self._separate(latents, cue, mask)
        pred, free = self.pc.predict_sensory(matched), self.pc.predict_sensory(latents)
        evidence = self._evidence(cue, mask, sse, two, free)
        stored = evidence[:, 0] <= 1.0
        out = torch.where(
            mask, cue, torch.where(stored.unsqueeze(1), pred, free)
        )  # free: completion's answer
        rounds = torch.ones(cue.shape[0], dtype=torch.long, device=cue.device)
        unique = stored & (evidence[:, 1] > 1.0)
        return IndexRecall(out, nearest, distance, evidence[:, 0], evidence[:, 1], stored, unique, rounds)

    def _evidence(self, cue: Tensor, mask: Tensor | None, sse: Tensor, rows: Tensor, free: Tensor) -> Tensor:
        """(B, 2) SSE / ((1 + noise_margin) SSE_free / (1 - absorbed) + fit_margin fit_i k) on
        the known entries, for the landed-on pattern and the runner-up (sse and rows (B, 2);
        fit_i is that pattern's own fit MSE): <= 1 passes the stored-pattern test."""
        cfg = self.config
        if cfg.noise_margin is None:  # always the stored pattern
            return torch.stack([torch.zeros_like(sse[:, 0]), torch.full_like(sse[:, 0], float("inf"))], dim=1)
        known = torch.ones_like(cue) if mask is None else mask.to(cue.dtype)
        sse_free = ((cue - free) * known).square().sum(1)
        noise = sse_free / (1.0 - self.absorbed)  # the cue's noise, estimated
        allowance = cfg.fit_margin * self.fit_errors[rows] * known.sum(1, keepdim=True)  # (B, 2)
        return sse / ((1.0 + cfg.noise_margin) * noise.unsqueeze(1) + allowance).clamp_min(1e-30)
