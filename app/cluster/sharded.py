"""``ShardedMemory``: a hopfield memory split over S shard actors, as the gateway serves it.

It answers what ``kinds.HopfieldMemory`` answers, to float tolerance and with the same
matches, from the shards' parts (``memory_core.partials``): a recall is one fan-out per
retrieval step (each shard's log-sum-exp / top-k / sum parts of that step, merged here)
and one more for the result's energy and its nearest stored patterns. A shard that does
not answer fails the recall with ``ShardUnavailable`` (503): no answer is ever computed
without a shard.

Stores (``store``): the batch's ids are dealt to their shards (``protocol.shard_of``) at
sequence numbers from ``SeqCounter``; every shard that gets a part stages it durably; only
when all have staged are the parts published (made visible) and the batch acknowledged.
If any shard refuses (an id taken: 409) or fails (503), every part is called off, so
nothing of the batch is visible; if calling off cannot reach a shard in time the error
names the ids that may be stored. Writes to one memory are serialised (``writing``).
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from typing import Any

import torch
from torch import Tensor

from memory_core import UniversalHopfield
from memory_core.checks import check_batch, check_mask
from memory_core.partials import (
    energy_from_potential,
    finish_partial,
    iterate_retrieval,
    merge_partials,
    merge_tops,
)

from ..exceptions import (
    MemoryBudgetExceeded,
    MemoryEmpty,
    MemoryNotFound,
    PatternExists,
    PatternNotFound,
    ShardUnavailable,
)
from ..kinds import CaptionLookup, Recall, TextLookup
from ..rwlock import RWLock
from ..storage import MemoryRecord, NewPattern, PatternRow
from ..text_memory import layout_of, stored_dim
from .actors import ActorGroup
from .protocol import ShardAnswer, ShardQuery, from_wire, shard_of, to_wire
from .storage import SeqCounter

__all__ = ["ShardedMemory"]

_TOL = 1e-6  # iterated retrieval's convergence tolerance (UniversalHopfield.retrieve's default)


class ShardedMemory:
    """A hopfield memory over shard actors (see the module docstring).

    Arguments:
        record: the memory's record, ``config`` the hopfield kind's resolved config.
        shards: its shard actors.
        seqs: the gateway's sequence numbers.
    """

    kind = "hopfield"
    trainable = False
    shaped = True  # stores patterns (LiveMemory's class attributes, which the API reads)
    items = "patterns"

    def __init__(self, record: MemoryRecord, shards: ActorGroup, seqs: SeqCounter) -> None:
        self.record = record
        self.shards = shards
        self.seqs = seqs
        self.device = torch.device("cpu")  # where the gateway merges (the shards compute)
        self.rw = RWLock()  # API symmetry with LiveMemory; the shards hold the data
        self.writing = threading.Lock()
        self.deleted = False
        model = UniversalHopfield(**record.config, device="cpu")  # stores nothing: sim and sep
        self.sim, self.sep = model.sim, model.sep
        self.dim = stored_dim(record.shape, record.text)
        self._counts = [0] * len(shards)
        self._unknown: set[int] = set()  # shards whose count a failed call left unknown

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def count(self) -> int:
        """Patterns over all shards: as the shards last said (a store, delete or recall answer),
        asking again the shards whose count a failure left unknown."""
        if self._unknown:
            infos, _ = self.shards.settle({i: self.shards.call(i, "info") for i in list(self._unknown)})
            for i, info in infos.items():
                if "patterns" in info:  # (not while its file is missing: asked again next time)
                    self._counts[i] = info["patterns"]
                    self._unknown.discard(i)
        return sum(self._counts)

    def learn_counts(self) -> None:
        """Take the patterns per shard from the last health probe (after a start); a shard
        whose file is missing is asked again until it has found it."""
        for i, info in enumerate(self.shards.infos):
            if info is not None and "patterns" in info:
                self._counts[i] = info["patterns"]
            elif info is not None:
                self._unknown.add(i)

    # --- fan-out --------------------------------------------------------------------------
    def _fanout(self, query: ShardQuery) -> list[ShardAnswer]:
        """One query to every shard; every answer, or ``ShardUnavailable``."""
        message: Any = to_wire(query)
        if len(self.shards) > 1:
            import ray

            message = ray.put(message)  # serialised once for all shards
        answers = self.shards.wait(
            {i: self.shards.call(i, "compute", message) for i in range(len(self.shards))}
        )
        for i, answer in answers.items():
            self._counts[i] = answer.count
        return [from_wire(answers[i]) for i in range(len(self.shards))]

    def _merged(self, answers: list[ShardAnswer]) -> tuple[Tensor | None, Tensor | None]:
        """(output, potential) of the shards' merged parts."""
        parts = [a.partial for a in answers if a.partial is not None]
        if not parts:
            raise MemoryEmpty(f"memory {self.name!r} is empty: store patterns first")
        return finish_partial(merge_partials(parts, k=self.sep.k), self.sep)

    def _pass(self, state: Tensor, mask: Tensor | None) -> Tensor:
        """One retrieval step over every shard: (B, D') -> (B, D')."""
        out, _ = self._merged(self._fanout(ShardQuery(state, mask, output=True)))
        return out.float()

    def _top(self, answers: list[ShardAnswer], k: int, field: str = "top") -> tuple[Any, list[list[str]]]:
        """The merged k best of the shards' ``field`` ("top" or "captions") and their ids."""
        have = [a for a in answers if getattr(a, field) is not None]
        top, pos = merge_tops([getattr(a, field) for a in have], k)
        id_field = "top_ids" if field == "top" else "caption_ids"
        side_by_side = [[pid for a in have for pid in getattr(a, id_field)[b]] for b in range(pos.shape[0])]
        return top, [[row[p] for p in cols] for row, cols in zip(side_by_side, pos.tolist())]

    def _energy(self, state: Tensor, answers: list[ShardAnswer]) -> list[float]:
        _, phi = self._merged(answers)
        return (energy_from_potential(state, phi, self.sim).float() + 0.0).tolist()

    def _cues(self, cues: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Checked cues (B, D') and masks, as ``UniversalHopfield`` checks them."""
        if self.count == 0:
            raise MemoryEmpty(f"memory {self.name!r} is empty: store patterns first")
        cues = check_batch(cues.float(), self.dim, "cue")
        return cues, None if masks is None else check_mask(masks, cues.shape)

    # --- recall (what kinds.HopfieldMemory answers) ------------------------------------------
    def recall_batch(self, cues: Tensor, masks: Tensor | None, k: int, steps: int) -> list[Recall]:
        """As ``LiveMemory.recall_batch``: results (B, D), matches, energies."""
        cues = cues.float()
        if self.record.text:
            cues, masks = layout_of(self.record).image_cue(cues, masks)  # (B, D + 384)
        cues, masks = self._cues(cues, masks)
        out = iterate_retrieval(self._pass, cues, masks, steps, _TOL, torch.float32)  # (B, D')
        final = self._fanout(ShardQuery(out, potential=True, top_k=k))
        energy = self._energy(out, final)
        top, ids = self._top(final, k)
        scores = (top.scores.float() + 0.0).tolist()
        out = out[:, : self.record.dim].float()
        return [
            Recall(
                output=out[b],
                matches=list(zip(ids[b], scores[b])),
                energy=energy[b],
                state="ready",
                trained_count=self.count,
            )
            for b in range(out.shape[0])
        ]

    def lookup_text(self, embeddings: Tensor, k: int) -> TextLookup:
        """As ``LiveMemory.lookup_text``: caption (B, 384) known, pattern completed."""
        layout = layout_of(self.record)
        cue, mask = self._cues(*layout.text_cue(embeddings.float()))  # (B, D + 384)
        first = self._fanout(ShardQuery(cue, mask, output=True, top_k=k, top_masked=True, top_values=True))
        out = self._merged(first)[0].float()
        energy = self._energy(out, self._fanout(ShardQuery(out, potential=True)))
        top, ids = self._top(first, k)
        b, kk, d = top.values.shape
        stored = layout.image_part(top.values.reshape(b * kk, d)).float().reshape(b, kk, -1)
        scores = (top.scores.float() + 0.0).tolist()
        return TextLookup(
            outputs=layout.image_part(out).float(),
            matches=[list(zip(ids[i], scores[i])) for i in range(b)],
            stored=stored,
            energies=energy,
            state="ready",
            trained_count=self.count,
        )

    def lookup_captions(self, cues: Tensor, masks: Tensor | None, k: int) -> CaptionLookup:
        """As ``LiveMemory.lookup_captions``: pattern (B, D) known, the nearest stored captions."""
        layout = layout_of(self.record)
        cue, mask = self._cues(*layout.image_cue(cues.float(), masks))
        out = self._pass(cue, mask)
        final = self._fanout(ShardQuery(out, potential=True, captions_k=k, caption_from=self.record.dim))
        top, ids = self._top(final, k, "captions")
        scores = (top.scores.float() + 0.0).tolist()
        return CaptionLookup(
            matches=[list(zip(ids[i], scores[i])) for i in range(len(ids))],
            energies=self._energy(out, final),
            state="ready",
            trained_count=self.count,
        )

    # --- writes -----------------------------------------------------------------------------
    def store(self, patterns: list[NewPattern]) -> tuple[list[str], int]:
        """Store a batch on its shards, all or nothing (see the module docstring); returns
        (ids, count) once every part is durable and visible."""
        with self.writing:
            if self.deleted:
                raise MemoryNotFound(self.name)
            dealt = [shard_of(p.id, len(self.shards)) for p in patterns]
            self._check_budgets(Counter(dealt), len(patterns))
            seqs = self.seqs.take(self.record.id, len(patterns))
            parts: dict[int, tuple[list[NewPattern], list[int]]] = {}
            for p, seq, shard in zip(patterns, seqs, dealt):
                part = parts.setdefault(shard, ([], []))
                part[0].append(p)
                part[1].append(seq)
            token = secrets.token_hex(8)
            staged, failed = self.shards.settle(
                {i: self.shards.call(i, "stage", token, ps, ss) for i, (ps, ss) in parts.items()}
            )
            taken = {pid for ids in staged.values() for pid in ids}
            if taken or failed:
                # a shard without its file refused to stage (it has nothing to call off)
                refused = {
                    i
                    for i, e in failed.items()
                    if str((e.details or {}).get("reason")).startswith("shard_file")
                }
                doubt = self._call_off(token, {i: part for i, part in parts.items() if i not in refused})
                if taken:
                    raise PatternExists(self.name, [p.id for p in patterns if p.id in taken])
                error = next(iter(failed.values()))
                if doubt:
                    error.message += f"; these ids could not be called off and may be stored: {doubt[:10]}"
                    error.details = {**(error.details or {}), "stored_unknown": doubt}
                else:
                    error.message += "; nothing of this batch was stored"
                raise error
            published, died = self.shards.settle({i: self.shards.call(i, "publish", token) for i in parts})
            for i, count in published.items():
                self._counts[i] = count
            for i in died:  # its part is on disk: its restart loads it, and it counts
                self._counts[i] += len(parts[i][0])
            return [p.id for p in patterns], self.count

    def _check_budgets(self, new: dict[int, int], total: int) -> None:
        """422 ``memory_budget_exceeded`` if a shard's part would pass its memory budget (as it
        last said: AMS_SHARD_MEMORY_BUDGET, or half of its process's memory at its start).
        A shard holds its rows (D float32 each) in a buffer that doubles as it grows (up to 2x
        its rows, 3x while the old buffer is copied into the new one), and while it stores,
        the received part twice (the wire's copy, the tensor)."""
        rows = 4 * self.dim
        for i, n in sorted(new.items()):
            info = self.shards.infos[i]
            if info is None or "memory_budget" not in info:
                continue  # down (its stage call answers 503), or a shard of an older version
            limit, held = int(info["memory_budget"]), rows * self._counts[i]
            needed = rows * (3 * (self._counts[i] + n) + 2 * n) - held
            if needed > limit - held:
                raise MemoryBudgetExceeded(
                    f"storing {total} patterns in {self.name!r} ({n} of them on shard {i}, which holds "
                    f"{self._counts[i]})",
                    needed,
                    max(0, limit - held),
                    limit,
                    budget=f"shard {i}'s memory budget",
                    setting="AMS_SHARD_MEMORY_BUDGET",
                )

    def _call_off(self, token: str, parts: dict[int, tuple[list[NewPattern], list[int]]]) -> list[str]:
        """Delete a batch's parts on every shard that got one; the ids not known deleted."""
        pending = {i: [(p.id, seq) for p, seq in zip(ps, ss)] for i, (ps, ss) in parts.items()}
        for _ in range(3):  # a shard that died comes back within seconds (its restart)
            done, _failed = self.shards.settle(
                {i: self.shards.call(i, "abort", token, ids) for i, ids in pending.items()}
            )
            for i, count in done.items():
                self._counts[i] = count
                del pending[i]
            if not pending:
                return []
        self._unknown |= set(pending)
        return [pid for rows in pending.values() for pid, _ in rows]

    def delete_pattern(self, pattern_id: str) -> None:
        """Delete one pattern (durable and invisible on return)."""
        with self.writing:
            if self.deleted:
                raise MemoryNotFound(self.name)
            index = shard_of(pattern_id, len(self.shards))
            try:
                found = self.shards.wait({index: self.shards.call(index, "delete", pattern_id)})[index]
            except ShardUnavailable:
                self._unknown.add(index)  # the delete may have been done
                raise
            if not found:
                raise PatternNotFound(self.name, pattern_id)
            self._counts[index] -= 1

    # --- reads of stored patterns -----------------------------------------------------------
    def page(self, after_seq: int, limit: int) -> list[PatternRow]:
        """Up to ``limit`` patterns after ``after_seq`` in storage order, merged over shards."""
        pages = self.shards.wait(
            {i: self.shards.call(i, "page", after_seq, limit) for i in range(len(self.shards))}
        )
        rows = sorted((r for page in pages.values() for r in page), key=lambda r: r.seq)
        return rows[:limit]

    def get_pattern(self, pattern_id: str) -> PatternRow | None:
        index = shard_of(pattern_id, len(self.shards))
        return self.shards.wait({index: self.shards.call(index, "get_pattern", pattern_id)})[index]

    def get_texts(self, pattern_ids: list[str]) -> dict[str, str | None]:
        groups: dict[int, list[str]] = {}
        for pid in pattern_ids:
            groups.setdefault(shard_of(pid, len(self.shards)), []).append(pid)
        found = self.shards.wait({i: self.shards.call(i, "get_texts", ids) for i, ids in groups.items()})
        return {pid: text for texts in found.values() for pid, text in texts.items()}

    # --- what the API and metrics read ----------------------------------------------------------
    @property
    def state(self) -> str:
        """Always "ready", as a hopfield memory in one process (its details say the same)."""
        return "ready"

    def resident_bytes(self) -> int:
        """Bytes the gateway holds for it (the memory budget, app/budget.py): none, its patterns
        live in the shards' processes."""
        return 0

    def details(self) -> dict[str, Any]:
        """Count, state, trained_count and placement; ``count_complete`` is False while a shard
        is down or its count unknown (``count`` then misses or guesses its patterns)."""
        count = self.count
        placement = [
            # patterns as of the last write or recall (the probe's may be older); none without its file
            entry if "fault" in entry else {**entry, "patterns": n}
            for entry, n in zip(self.shards.placement(), self._counts)
        ]
        complete = not self._unknown and all(entry["state"] == "up" for entry in placement)
        return {
            "count": count,
            "count_complete": complete,
            "state": "ready",
            "trained_count": count,
            "placement": placement,
        }

    def nbytes(self) -> int:
        return sum((info or {}).get("bytes", 0) for info in self.shards.infos)

    def unavailable(self) -> str | None:
        return self.shards.unavailable()
