"""BoxE's settings (``BoxEConfig``) and the names of its parameter tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

__all__ = ["PARAM_NAMES", "BoxEConfig"]

PARAM_NAMES = ("entity_base", "entity_bump", "box_centre", "box_shape", "box_scale", "separators")


# Ceilings far above any value that trains (the defaults: margin 3, temperature 1, lr 0.01);
# past them float32 losses overflow or Adam's steps throw every box out, and training diverges.
_CEILINGS = {"margin": 1e3, "adversarial_temperature": 1e3, "lr": 1.0}


@dataclass
class BoxEConfig:
    """Model and training settings. Defaults: the authors' reference code (``ModelOptions``)
    except ``batch_size`` and ``epochs``, which are the benchmark's (results/bench_boxe.md:
    on Nations and UMLS they match PyKEEN's BoxE trained alike)."""

    dim: int = 64  # d, embedding dimension
    norm: int = 2  # p of the distance's norm over dimensions (1 or 2)
    tanh: bool = True  # map points and boxes through tanh (bounded space)
    margin: float = 3.0  # gamma of the self-adversarial loss
    adversarial_temperature: float = 1.0  # alpha: weight of a negative ~ softmax(alpha * score)
    negatives: int = 25  # corrupted facts per true fact
    batch_size: int = 256
    lr: float = 1e-2  # Adam's learning rate
    epochs: int = 100  # default passes of fit()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "batch_size", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.norm not in (1, 2):
            raise ValueError(f"norm must be 1 or 2, got {self.norm!r}")
        if not isinstance(self.negatives, int) or self.negatives < 0:
            raise ValueError(f"negatives must be an integer >= 0, got {self.negatives!r}")
        for name in ("margin", "adversarial_temperature", "lr"):
            value, ceiling = getattr(self, name), _CEILINGS[name]
            if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= ceiling:
                raise ValueError(f"{name} must be a number in [0, {ceiling:g}], got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0")
        if not isinstance(self.seed, int):
            raise TypeError(f"seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BoxEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown BoxE settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)
