"""``PCMemory`` checkpoints: one safetensors file, the JSON config in its metadata.

Tensors: W1, b1, ..., prior_mean, and once the model has trained Adam's state per
parameter (``adam.<name>.m`` / ``.v``, ``adam.<name>.step``), so that a loaded model trains
on exactly as the saved one would (results/pc_defaults.md#adam-in-checkpoints says what a
fresh Adam costs). Written atomically (``memory_core.files.atomic_write``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import digest
from ..files import atomic_write
from .config import PCConfig

__all__ = ["FORMAT", "adam_tensors", "load", "restore_adam", "save"]

FORMAT = "ams-pc/1"
METADATA_KEYS = frozenset({"format", "config", "trained_count", "epochs_done", "code_precision", "dtype"})


def adam_tensors(opt: torch.optim.Optimizer | None, named: dict[str, Tensor]) -> dict[str, Tensor]:
    """Adam's state as named tensors ({} before the first weight step): per parameter that
    has taken a step, ``adam.<name>.m`` / ``.v`` (first and second moments) and
    ``adam.<name>.step`` (a 0-d float, the step count of its bias correction)."""
    if opt is None:
        return {}
    out = {}
    for name, p in named.items():
        state = opt.state.get(p)
        if state:
            out[f"adam.{name}.m"] = state["exp_avg"]
            out[f"adam.{name}.v"] = state["exp_avg_sq"]
            out[f"adam.{name}.step"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(())
    return out


def restore_adam(opt: torch.optim.Optimizer, named: dict[str, Tensor], tensors: dict[str, Tensor]) -> None:
    """Load ``adam_tensors``' output into a fresh optimizer over ``named``'s parameters (in
    that order), moments cast to the parameters' dtype and device."""
    state = {}
    for i, (name, p) in enumerate(named.items()):
        if f"adam.{name}.m" in tensors:
            state[i] = {
                "step": tensors[f"adam.{name}.step"].detach().clone(),
                "exp_avg": tensors[f"adam.{name}.m"].to(p.device, p.dtype),
                "exp_avg_sq": tensors[f"adam.{name}.v"].to(p.device, p.dtype),
            }
    # load_state_dict places each step count where this optimizer's kernel wants it
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def save(pc: Any, path: str | os.PathLike) -> None:
    """Write ``pc`` (a ``PCMemory``) to ``path``: weights, Adam's state, config, counters."""
    from safetensors.torch import save as st_save

    named = pc.named_parameters() | adam_tensors(pc._opt, pc.named_parameters())
    tensors = {k: t.detach().to("cpu").contiguous() for k, t in named.items()}
    meta = {
        "format": FORMAT,
        "config": pc.config.to_json(),
        "trained_count": str(pc.trained_count),
        "epochs_done": str(pc._epochs_done),
        **({} if pc.code_precision is None else {"code_precision": repr(pc.code_precision)}),
        "dtype": str(pc.dtype).removeprefix("torch."),
    }
    meta[digest.KEY] = digest.digest(tensors, meta)
    atomic_write(Path(path), st_save(tensors, metadata=meta))


_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _read(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    raw = Path(path).read_bytes()
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, TypeError, AttributeError, RuntimeError, OverflowError) as exc:
        raise ValueError(f"{path}: not a PC memory checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        format_ = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: not a PC memory checkpoint (format {format_!r})")
    return tensors, meta


def _expected_shapes(sizes: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The parameters' names and shapes a config of these layer widths has (W_l: (n_l, n_{l-1}))."""
    shapes: dict[str, tuple[int, ...]] = {}
    for l in range(1, len(sizes)):
        shapes[f"W{l}"], shapes[f"b{l}"] = (sizes[l], sizes[l - 1]), (sizes[l],)
    shapes["prior_mean"] = (sizes[0],)
    return shapes


def _check_tensors(path, tensors: dict[str, Tensor], wanted: dict[str, tuple[int, ...]]) -> None:
    """Every parameter present with the config's shape and finite, Adam's state whole (and
    finite) or absent, nothing unknown. Checked against the config before any model is
    built, so that a damaged config can never make the loader allocate more than the file holds."""
    names = list(wanted)
    known = set(names) | {f"adam.{n}.{k}" for n in names for k in ("m", "v", "step")}
    missing, unknown = sorted(set(names) - set(tensors)), sorted(set(tensors) - known)
    if missing:
        raise ValueError(f"{path}: checkpoint lacks tensors {missing}")
    if unknown:  # e.g. a newer format's state: refused rather than silently dropped
        raise ValueError(f"{path}: checkpoint has tensors this version does not know: {unknown}")
    for name, want in wanted.items():
        shapes = {name: tensors[name].shape}
        parts = [f"adam.{name}.{k}" in tensors for k in ("m", "v", "step")]
        if any(parts) and not all(parts):
            raise ValueError(f"{path}: checkpoint has part of Adam's state for {name}")
        if all(parts):
            shapes |= {f"adam.{name}.{k}": tensors[f"adam.{name}.{k}"].shape for k in ("m", "v")}
            if tensors[f"adam.{name}.step"].numel() != 1:
                raise ValueError(f"{path}: adam.{name}.step is not one number")
        for key, shape in shapes.items():
            if tuple(shape) != tuple(want):
                raise ValueError(f"{path}: {key} has shape {tuple(shape)}, the config needs {tuple(want)}")
    for key, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{path}: {key} holds {t.dtype}, not floats")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: {key} holds NaN or infinite values (a damaged checkpoint)")


def _count(path, meta: dict[str, str], key: str) -> int:
    """A non-negative integer of the metadata (0 when absent)."""
    try:
        value = int(meta.get(key, "0"))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: metadata {key} is not an integer") from None
    if value < 0:
        raise ValueError(f"{path}: metadata {key} is negative")
    return value


def _parse_meta(path, meta: dict[str, str]) -> tuple[PCConfig, torch.dtype, float | None]:
    """(config, dtype, code precision) from the metadata; ValueError naming what is wrong."""
    try:
        config = PCConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # json's errors are ValueErrors
        raise ValueError(f"{path}: the checkpoint's config is unreadable ({exc})") from None
    dtype = _DTYPES.get(meta.get("dtype", "float32"))
    if dtype is None:
        raise ValueError(f"{path}: unknown dtype {meta.get('dtype')!r}")
    precision = None
    if "code_precision" in meta:  # not in checkpoints written before it was kept
        try:
            precision = float(meta["code_precision"])
        except (TypeError, ValueError):
            precision = math.nan
        if not (math.isfinite(precision) and precision > 0):
            raise ValueError(f"{path}: code_precision {meta['code_precision']!r} is not a positive number")
    return config, dtype, precision


def load(cls: type, path: str | os.PathLike, device: str | torch.device = "auto") -> Any:
    """Read a checkpoint written by ``save`` into a new ``cls`` (``PCMemory``) on ``device``;
    ValueError for a file that is not one, whose tensors do not fit its config, or that holds
    non-finite numbers (OSError when it cannot be read at all)."""
    tensors, meta = _read(path)
    digest.verify(tensors, meta, path, METADATA_KEYS)
    config, dtype, precision = _parse_meta(path, meta)
    _check_tensors(path, tensors, _expected_shapes(config.sizes))
    trained_count, epochs_done = _count(path, meta, "trained_count"), _count(path, meta, "epochs_done")
    try:
        pc = cls(config.sizes, config.activation, device="cpu", seed=config.seed, config=config, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a half-precision dtype on the CPU
        raise ValueError(f"{path}: the checkpoint's model cannot be built here ({exc})") from None
    pc.weights = [tensors[f"W{l}"].to(dtype) for l in range(1, len(config.sizes))]
    pc.biases = [tensors[f"b{l}"].to(dtype) for l in range(1, len(config.sizes))]
    pc.prior_mean = tensors["prior_mean"].to(dtype)
    pc.trained_count, pc._epochs_done, pc.code_precision = trained_count, epochs_done, precision
    pc.to(device)
    adam = {k: v for k, v in tensors.items() if k.startswith("adam.")}
    if adam:  # checkpoints written before Adam's state was saved have none
        pc._opt = pc._optimizer(config.weight_lr)
        restore_adam(pc._opt, pc.named_parameters(), adam)
    return pc
