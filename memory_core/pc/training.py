"""What ``fit`` gives back (``FitHistory``) and its weight learning rate (``WeightSchedule``).

The rate follows a cosine from ``weight_lr`` to ``weight_lr * lr_floor`` over each of the
call's ``cycles`` (warm restarts); once the energy is low enough in the last cycle, a
shorter cosine takes it from where it is to the floor over ``stop_anneal`` epochs, and
``fit`` stops (results/pc_defaults.md#annealing-tail says why it does not stop at once).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import Tensor

from .config import PCConfig

__all__ = ["FitHistory", "WeightSchedule", "cosine"]


@dataclass
class FitHistory:
    """What ``fit`` did: the energy of every epoch and why it stopped.

    Behaves like the list of per-epoch energies (``len``, indexing, iteration).

    Attributes:
        energies: mean energy per pattern of each epoch, measured after relaxation and
            before that minibatch's weight step.
        stopped: "epochs" (all run), "energy" (reached ``stop_energy``, then annealed the
            weight rate over ``stop_anneal`` epochs) or "callback".
        seconds: wall time of the call.
        codes: the stored patterns' latent states at the end of the call, one (N, n_l) per
            latent layer, in the order given (``PCMemory.infer_latents(purpose="code")``):
            ``PCIndex.build`` takes them instead of relaxing the set again.
    """

    energies: list[float] = field(default_factory=list)
    stopped: str = "epochs"
    seconds: float = 0.0
    codes: list[Tensor] | None = None

    def __len__(self) -> int:
        return len(self.energies)

    def __getitem__(self, i):
        return self.energies[i]

    def __iter__(self) -> Iterator[float]:
        return iter(self.energies)


def cosine(step: int, steps: int) -> float:
    """A cosine schedule's weight on its start: 1 at step 0, 0 at step ``steps - 1``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, steps - 1))))


class WeightSchedule:
    """The rate of each epoch of a ``fit`` call of ``epochs`` epochs, and when it stops.

    Call ``rate(epoch)`` at the start of every epoch (it says whether a new cycle began)
    and ``should_stop(epoch, energy_per_entry)`` at its end.
    """

    def __init__(self, config: PCConfig, epochs: int) -> None:
        self.config = config
        self.epochs = epochs
        self.cycles = min(config.cycles, max(1, epochs))
        self.bounds = [
            round(k * epochs / self.cycles) for k in range(self.cycles + 1)
        ]  # cycle k: [b_k, b_k+1)
        self.cycle = 0
        self.current = config.weight_lr
        self.floor = config.weight_lr * config.lr_floor
        self.tail: tuple[int, int, float] | None = None  # (first epoch, length, starting rate)

    def rate(self, epoch: int) -> tuple[float, bool]:
        """(the epoch's rate, whether a new cycle starts at it)."""
        cfg, restarted = self.config, False
        while epoch >= self.bounds[self.cycle + 1]:
            self.cycle += 1
            restarted = True
        if self.tail is None:
            start, span = self.bounds[self.cycle], self.bounds[self.cycle + 1] - self.bounds[self.cycle]
            self.current = cfg.weight_lr * (cfg.lr_floor + (1.0 - cfg.lr_floor) * cosine(epoch - start, span))
        else:
            first, length, rate = self.tail
            self.current = self.floor + (rate - self.floor) * cosine(epoch - first + 1, length + 1)
        return self.current, restarted

    def should_stop(self, epoch: int, energy_per_entry: float) -> bool:
        """After an epoch: True once the annealing tail has run out (or there is nothing
        left to anneal); starts the tail when the last cycle reaches ``stop_energy``."""
        if self.tail is not None:
            return epoch - self.tail[0] + 1 >= self.tail[1]
        if self.cycle == self.cycles - 1 and energy_per_entry <= self.config.stop_energy:
            length = min(self.config.stop_anneal, self.epochs - epoch - 1)
            if length == 0 or self.current <= self.floor:  # nothing left to settle
                return True
            self.tail = (epoch + 1, length, self.current)
        return False
