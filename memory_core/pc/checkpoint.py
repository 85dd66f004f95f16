"""``PCMemory`` checkpoints: one safetensors file, the JSON config in its metadata.

Tensors: W1, b1, ..., prior_mean, and once the model has trained Adam's state per
parameter (``adam.<name>.m`` / ``.v``, ``adam.<name>.step``), so that a loaded model trains
on exactly as the saved one would (results/pc_defaults.md#adam-in-checkpoints says what a
fresh Adam costs). Written atomically (``memory_core.files.atomic_write``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..files import atomic_write
from .config import PCConfig

__all__ = ["FORMAT", "adam_tensors", "load", "restore_adam", "save"]

FORMAT = "ams-pc/1"


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
    atomic_write(Path(path), st_save(tensors, metadata=meta))


def _read(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    raw = Path(path).read_bytes()
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a PC memory checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a PC memory checkpoint (format {meta.get('format')!r})")
    return tensors, meta


def _check_tensors(path, tensors: dict[str, Tensor], wanted: dict[str, Tensor]) -> None:
    """Every parameter present with the config's shape, Adam's state whole or absent, nothing unknown."""
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
        for key, shape in shapes.items():
            if shape != want.shape:
                raise ValueError(
                    f"{path}: {key} has shape {tuple(shape)}, the config needs {tuple(want.shape)}"
                )


def load(cls: type, path: str | os.PathLike, device: str | torch.device = "auto") -> Any:
    """Read a checkpoint written by ``save`` into a new ``cls`` (``PCMemory``) on ``device``;
    ValueError for a file that is not one, or whose tensors do not fit its config."""
    tensors, meta = _read(path)
    config = PCConfig.from_dict(json.loads(meta["config"]))
    dtype = getattr(torch, meta.get("dtype", "float32"))
    pc = cls(config.sizes, config.activation, device="cpu", seed=config.seed, config=config, dtype=dtype)
    _check_tensors(path, tensors, pc.named_parameters())
    pc.weights = [tensors[f"W{l}"].to(dtype) for l in range(1, len(config.sizes))]
    pc.biases = [tensors[f"b{l}"].to(dtype) for l in range(1, len(config.sizes))]
    pc.prior_mean = tensors["prior_mean"].to(dtype)
    pc.trained_count = int(meta.get("trained_count", "0"))
    pc._epochs_done = int(meta.get("epochs_done", "0"))
    if "code_precision" in meta:  # not in checkpoints written before it was kept
        pc.code_precision = float(meta["code_precision"])
    pc.to(device)
    adam = {k: v for k, v in tensors.items() if k.startswith("adam.")}
    if adam:  # checkpoints written before Adam's state was saved have none
        pc._opt = pc._optimizer(config.weight_lr)
        restore_adam(pc._opt, pc.named_parameters(), adam)
    return pc
