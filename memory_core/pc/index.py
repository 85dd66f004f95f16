"""A memory index for a trained ``PCMemory``: recall that lands on stored patterns.

Salvatori et al. describe their network as a generative model with the hippocampus as a
memory index. ``PCMemory.retrieve`` (the paper's pure variant) relaxes the latents on the
cue and reads the sensory prediction: on real images beyond about 100 patterns that
prediction is a blend of stored images. ``PCIndex`` adds the index:

- ``build``: keeps every stored pattern's latent state, for every latent layer (codes
  z_i (N, n_0), h_i (N, n_1), ...): what one relaxation of the pattern clamped with
  training's precisions settles to (``fit`` infers them anyway: ``FitHistory.codes``).
- ``recall``: the network infers the cue's latents as the pure variant does (one round
  of noisy recall, or completion's relaxation for a partial cue); a Hopfield search in
  the top latent space proposes the ``candidates`` stored codes nearest the cue's top
  latent (euclidean); the network's energy of the cue at each candidate's stored state
  (its sensory error on the cue's known entries) picks one, a max separation on -E; the
  network predicts the sensory layer from that state (mu_x = W f(h) + b). For a noisy cue
  this is one round of F, repeated with the prediction as the new cue until it stops
  moving (``PCIndexConfig.tol``); a partial cue's known entries stay as given, so its one
  round is F's fixed point. The output is the network's prediction, never a copy.
- Stored or not: a likelihood-ratio test on the cue's known entries, is the cue the
  landed-on pattern plus white noise? The free reconstruction (the pure variant's, from
  the same latents) absorbs a fraction ``absorbed`` of white noise, measured at ``build``
  on noisy copies of stored patterns, so SSE_free / (1 - absorbed) estimates the cue's
  noise; the test passes when SSE_matched <= (1 + ``noise_margin``) x that +
  ``fit_margin`` x (that pattern's own fit MSE) x k, k the known entries. When the
  runner-up passes too, two stored patterns explain the cue: the answer is the better
  one, flagged not ``unique``. A cue that fails is taken for something not stored and
  gets the pure variant's reconstruction.

Why each piece, and its limits: docs/science/pc.md; measured: results/pc_real_images.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

from .. import digest
from ..checks import EmptyMemoryError, check_batch, check_mask
from ..files import atomic_write
from ..hopfield import UniversalHopfield
from .memory import PCMemory

__all__ = ["INDEX_FORMAT", "IndexRecall", "PCIndex", "PCIndexConfig", "model_digest"]

INDEX_FORMAT = "ams-pc-index/1"
_INDEX_KEYS = frozenset({"format", "model", "config", "scalars", "metadata"})


def model_digest(pc: PCMemory) -> str:
    """A digest of ``pc``'s parameters (sizes, dtype and values): names the model an index fits."""
    h = hashlib.sha256(repr((list(pc.sizes), str(pc.dtype))).encode())
    for t in pc.parameters():
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


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
        self.metadata: dict[str, str] = {}  # what ``save`` was given (``load`` restores it)
        self._lookup: UniversalHopfield | None = None

    def __len__(self) -> int:
        return 0 if self.codes is None else self.codes[0].shape[0]

    @torch.no_grad()
    def build(self, patterns: Tensor, codes: list[Tensor] | None = None) -> None:
        """Keep the latent codes of the stored ``patterns`` (N, D) (those ``pc`` was fit on).

        ``codes``: their latent states if already inferred (``fit``'s ``FitHistory.codes``,
        one (N, n_l) per latent layer): the build then skips that relaxation of the set.
        """
        if not self.pc.is_trained:
            raise EmptyMemoryError("fit the PC memory before building its index")
        patterns = check_batch(patterns, self.pc.dim, "patterns").to(self.pc.device, self.pc.dtype)
        if codes is None:
            codes = self.pc.codes(patterns)
        widths = [tuple(c.shape) for c in codes]
        if widths != [(len(patterns), n) for n in self.pc.sizes[:-1]]:
            raise ValueError(
                f"codes have shapes {widths}; {len(patterns)} patterns need {self.pc.sizes[:-1]}"
            )
        self.codes = [c.to(self.pc.device, self.pc.dtype) for c in codes]
        self.predictions = self.pc.predict_sensory(self.codes)
        self.fit_errors = (self.predictions - patterns).square().mean(1)
        self.fit_mse = float(self.fit_errors.median())
        self._store_codes()
        top = self.codes[0]
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

    def _store_codes(self) -> None:
        self._lookup = UniversalHopfield("euclidean", "max", device=self.pc.device, dtype=self.pc.dtype)
        self._lookup.store(self.codes[0])  # search only: the k codes nearest a cue's top latent

    # --- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
        """Write the index (codes, fit errors, calibration, config) as safetensors, atomically.

        The file names the model it was built for by a digest of its parameters, so
        ``load`` refuses it beside another model. ``metadata``: strings kept with it (the
        service keeps the stored patterns' ids there), back as ``load(...).metadata``.
        """
        if self.codes is None:
            raise EmptyMemoryError("the index is empty: call build(patterns) after fit")
        from safetensors.torch import save as st_save

        tensors = {f"codes.{l}": c for l, c in enumerate(self.codes)} | {"fit_errors": self.fit_errors}
        meta = {
            "format": INDEX_FORMAT,
            "model": model_digest(self.pc),
            "config": json.dumps(asdict(self.config)),
            "scalars": json.dumps(
                {"spacing": self.spacing, "fit_mse": self.fit_mse, "absorbed": self.absorbed}
            ),
            "metadata": json.dumps(metadata or {}),
        }
        cpu = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
        meta[digest.KEY] = digest.digest(cpu, meta)
        atomic_write(Path(path), st_save(cpu, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike, pc: PCMemory) -> PCIndex:
        """Read an index written by ``save`` for ``pc``; ValueError for a file that is not
        one, one built for another model or with shapes that do not fit ``pc``, or a damaged
        one (its checksum, ``memory_core.digest``, or a non-finite number)."""
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        raw = Path(path).read_bytes()
        try:
            tensors = st_load(raw)
            meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")]).get("__metadata__") or {}
            if meta.get("format") != INDEX_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            digest.verify(tensors, meta, path, _INDEX_KEYS)
            index = cls(pc, PCIndexConfig(**json.loads(meta["config"])))
            scalars, index.metadata = json.loads(meta["scalars"]), json.loads(meta["metadata"])
        except (SafetensorError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a PC memory index ({exc})") from None
        if meta["model"] != model_digest(pc):
            raise ValueError(f"{path}: this index was built for another model than the one given")
        layers = len(pc.sizes) - 1
        if set(tensors) != {f"codes.{l}" for l in range(layers)} | {"fit_errors"}:
            raise ValueError(f"{path}: index tensors {sorted(tensors)} do not fit sizes {list(pc.sizes)}")
        n = tensors["fit_errors"].shape[0]
        for l in range(layers):
            if tuple(tensors[f"codes.{l}"].shape) != (n, pc.sizes[l]):
                raise ValueError(f"{path}: codes.{l} has shape {tuple(tensors[f'codes.{l}'].shape)}")
        if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
            raise ValueError(f"{path}: the index holds NaN or infinite values (a damaged file)")
        index.codes = [tensors[f"codes.{l}"].to(pc.device, pc.dtype) for l in range(layers)]
        index.fit_errors = tensors["fit_errors"].to(pc.device, pc.dtype)
        index.spacing, index.fit_mse, index.absorbed = (
            scalars["spacing"],
            scalars["fit_mse"],
            scalars["absorbed"],
        )
        index.predictions = pc.predict_sensory(index.codes)
        index._store_codes()
        return index

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
