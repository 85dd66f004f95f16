"""Saving and loading a BoxE memory: one safetensors file, the rest as JSON in its metadata.

Tensors: the embeddings, the fact table (N, 1 + A) and Adam's moments once trained.
Metadata: the config, entity names, relations with their arities, the rules, and the
training counters. A loaded memory scores, completes and trains on exactly as the saved
one would have (the same bits on the same device).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from .. import digest
from ..files import atomic_write
from .config import PARAM_NAMES as _PARAMS
from .config import BoxEConfig

_Model = TypeVar("_Model")  # BoxE, which this module does not import (model.py imports it)

__all__ = ["load", "save"]

FORMAT = "ams-boxe/1"
METADATA_KEYS = frozenset(
    {"format", "config", "entities", "relations", "rules", "epochs_done", "trained_facts", "growths"}
)
_ADAM = ("exp_avg", "exp_avg_sq", "step")


def save(model: Any, path: str | os.PathLike) -> None:
    """Write ``model`` (a ``BoxE``) to ``path`` atomically (temp file, fsync, rename, fsync the folder)."""
    from safetensors.torch import save as st_save

    tensors = {name: getattr(model, name).detach().cpu().contiguous() for name in _PARAMS}
    tensors["facts"] = model.facts.table().contiguous()
    if model._opt is not None:
        for name, param in zip(_PARAMS, model.parameters()):
            for key, value in model._opt.state.get(param, {}).items():
                tensors[f"adam.{name}.{key}"] = value.detach().cpu().reshape(value.shape).contiguous()
    meta = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "entities": json.dumps(model.entities),
        "relations": json.dumps([[name, n] for name, n in model.relations.items()]),
        "rules": json.dumps(model.rules),
        "epochs_done": str(model.epochs_done),
        "trained_facts": str(model.trained_facts),
        "growths": str(model._growths),
    }
    meta[digest.KEY] = digest.digest(tensors, meta)
    atomic_write(path, st_save(tensors, metadata=meta))


def load(path: str | os.PathLike, device: str | torch.device, model_class: type[_Model]) -> _Model:
    """Read a memory written by ``save`` as a ``model_class`` (``BoxE``, passed in so that this
    module does not import the model); ValueError for a file that is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    raw = Path(path).read_bytes()
    try:
        tensors = st_load(raw)
        meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a BoxE checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:  # first: another model's checkpoint is not a damaged one
        raise ValueError(f"{path}: not a BoxE checkpoint (format {meta.get('format')!r})")
    digest.verify(tensors, meta, path, METADATA_KEYS)
    missing = [n for n in (*_PARAMS, "facts") if n not in tensors]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks tensors {missing}")
    try:
        config = BoxEConfig.from_dict(json.loads(meta["config"]))
        entities = json.loads(meta["entities"])
        relations = [(str(name), int(n)) for name, n in json.loads(meta["relations"])]
        rules = json.loads(meta["rules"])
        counters = {k: int(meta[k]) for k in ("epochs_done", "trained_facts", "growths")}
        if not isinstance(entities, list) or not all(isinstance(e, str) for e in entities):
            raise ValueError("entities are not names")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint metadata is damaged ({exc})") from None

    E, R, d = len(entities), len(relations), config.dim
    A = tensors["box_centre"].shape[1] if tensors["box_centre"].ndim == 3 else -1
    expect = {
        "entity_base": (E, d),
        "entity_bump": (E, d),
        "box_centre": (R, A, d),
        "box_shape": (R, A, d),
        "box_scale": (R, A),
    }
    for name, shape in expect.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{path}: {name} has shape {tuple(tensors[name].shape)}, the metadata needs {shape}"
            )

    _check_content(tensors, entities, relations, A, path)
    try:
        return _build(model_class, config, tensors, entities, relations, rules, counters, A, device, path)
    except (
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        RuntimeError,
    ) as exc:  # the rules', facts' own errors
        raise ValueError(f"{path}: checkpoint content is damaged ({type(exc).__name__}: {exc})") from None


def _check_content(tensors: dict, entities: list[str], relations: list, arity: int, path: Any) -> None:
    """ValueError unless the vocabulary is names, every weight finite and every fact's ids in range."""
    if len(set(entities)) != len(entities) or len({r for r, _ in relations}) != len(relations):
        raise ValueError(f"{path}: checkpoint metadata is damaged (a name appears twice)")
    if any(not 1 <= n <= arity for _, n in relations):
        raise ValueError(f"{path}: checkpoint metadata is damaged (an arity outside [1, {arity}])")
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: tensor {name} holds NaN or infinite values")
    facts = tensors["facts"]
    if facts.dtype != torch.int64 or facts.ndim != 2 or facts.shape[1] != 1 + arity:
        raise ValueError(f"{path}: the fact table is not an int64 (N, {1 + arity}) table")
    if facts.numel():
        rel, args = facts[:, 0], facts[:, 1:]
        arities = torch.tensor([n for _, n in relations] or [0])
        if not bool(((rel >= 0) & (rel < len(relations))).all()):
            raise ValueError(f"{path}: a fact names a relation the checkpoint does not hold")
        used = torch.arange(arity).unsqueeze(0) < arities[rel.clamp(0, len(relations) - 1)].unsqueeze(1)
        ok = torch.where(used, (args >= 0) & (args < len(entities)), args == -1)
        if not bool(ok.all()):
            raise ValueError(f"{path}: a fact names an entity the checkpoint does not hold")


def _build(
    model_class: type[_Model],
    config: BoxEConfig,
    tensors: dict[str, torch.Tensor],
    entities: list[str],
    relations: list[tuple[str, int]],
    rules: Any,
    counters: dict[str, int],
    A: int,
    device: str | torch.device,
    path: Any,
) -> _Model:
    """The model the checked checkpoint content describes (see ``load``)."""
    model = model_class(config=config, device="cpu")
    # vocabulary and rules exactly as saved (the rules re-create nothing: relations exist first)
    model._entities = list(entities)
    model._entity_index = {name: i for i, name in enumerate(entities)}
    model._relations = [name for name, _ in relations]
    model._relation_index = {name: i for i, name in enumerate(model._relations)}
    model._arity = [n for _, n in relations]
    for name in _PARAMS:
        setattr(model, name, tensors[name].to(torch.float32))
    model.facts.max_arity = A
    model.facts.add(tuple(x for x in row if x >= 0) for row in tensors["facts"].tolist())
    model.add_rules(rules)
    model._growths, model.epochs_done, model.trained_facts = (
        counters["growths"],
        counters["epochs_done"],
        counters["trained_facts"],
    )
    model.to(device)
    adam = {k: v for k, v in tensors.items() if k.startswith("adam.")}
    if adam:
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        for name, param in zip(_PARAMS, model.parameters()):
            parts = {key: adam.get(f"adam.{name}.{key}") for key in _ADAM}
            if all(v is None for v in parts.values()):
                continue
            if any(v is None for v in parts.values()) or parts["exp_avg"].shape != param.shape:
                raise ValueError(f"{path}: Adam's state for {name} is incomplete or of the wrong shape")
            opt.state[param] = {
                "step": parts["step"].to(torch.float32),
                "exp_avg": parts["exp_avg"].to(model.device),
                "exp_avg_sq": parts["exp_avg_sq"].to(model.device),
            }
        model._opt = opt
    return model
