"""``x @ w.T (+ bias)`` through oneDNN's linear on the CPU, torch's matmul elsewhere.

Why: torch's CPU matmul goes to MKL's sgemm, which on this project's AMD EPYC machines
runs at about half the speed of oneDNN's JIT kernels for the shapes a memory uses
(measured: cues (256, 784) against 100 000 keys, 259 ms with ``torch.mm`` against 127 ms
with oneDNN; one cue 18 ms against 6 ms; faiss's own OpenBLAS search 195 ms). torch
ships oneDNN and reaches it, for dense float32 tensors, through the operator its
compiler uses for linear layers, ``torch.ops.mkldnn._linear_pointwise``. That operator
is not public API, so it is used only where it is present and, once per process, gives
the same result as ``torch.mm`` on a probe; otherwise ``linear`` is plain torch.

``linear(x, w, bias)`` has the layout of ``torch.nn.functional.linear``: rows of ``w``
are what ``x`` is compared with (stored keys, or a layer's output units), so a memory's
keys (N, D) are used as they are stored, without a transpose or a copy.
"""

from __future__ import annotations

import logging
import os
import threading

import torch
from torch import Tensor

__all__ = ["linear", "onednn_available"]

log = logging.getLogger("memory_core.linalg")

_lock = threading.Lock()
_state: dict[str, bool] = {}


def _op():
    return torch.ops.mkldnn._linear_pointwise


def _probe() -> bool:
    """Whether oneDNN's linear exists here and agrees with torch.mm (float32 rounding)."""
    if os.environ.get("AMS_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(5, 37, generator=gen)
        w = torch.randn(300, 37, generator=gen)
        b = torch.randn(300, generator=gen)
        got = _op()(x, w, b, "none", [], "")
        want = torch.addmm(b, x, w.T)
        ok = got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    except Exception as exc:  # the operator is missing or refuses dense tensors
        log.info("oneDNN linear not used (%s): torch.mm instead", exc)
        return False
    if not ok:
        log.warning("oneDNN linear disagrees with torch.mm on a probe: torch.mm instead")
    return ok


def onednn_available() -> bool:
    """True when ``linear`` uses oneDNN for CPU float32 tensors (probed once)."""
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _probe()
        return _state["ok"]


def linear(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ w.T + bias``.

    Arguments:
        x: (B, D); w: (N, D); bias: (N,) or None. Any device and dtype (oneDNN only for
        contiguous float32 CPU tensors; the rest is ``torch.addmm`` / ``torch.mm``).

    Returns:
        (B, N), a new tensor.
    """
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and x.dim() == 2
        and w.dim() == 2
        and x.shape[0] > 0
        and w.shape[0] > 0
        and w.is_contiguous()
        and (bias is None or (bias.dtype == torch.float32 and bias.is_contiguous() and bias.dim() == 1))
        and not (x.requires_grad or w.requires_grad)
        and onednn_available()
    ):
        return _op()(x.contiguous(), w, bias, "none", [], "")
    return torch.mm(x, w.T) if bias is None else torch.addmm(bias, x, w.T)
