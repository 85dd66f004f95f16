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

__all__ = ["gram", "linear", "onednn_available", "uses_onednn"]

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


def uses_onednn(t: Tensor) -> bool:
    """Whether ``linear`` takes oneDNN for tensors like ``t`` (CPU float32, no autograd).

    Lets a hot loop decide if contiguous transposed copies of its weights pay (oneDNN
    reads ``w``'s rows; torch's matmul takes a transposed view for free)."""
    return t.device.type == "cpu" and t.dtype == torch.float32 and not t.requires_grad and onednn_available()


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


def gram(a: Tensor, strips: int = 4) -> Tensor:
    """``a @ a.T``, exactly symmetric, for a (H, D): the Gram matrix of a's rows.

    torch has no symmetric rank-k product (BLAS's syrk), so on the oneDNN path the
    upper triangle is computed in ``strips`` row strips (strip i against rows i*s..H)
    and mirrored: (strips + 1) / (2 strips) of the FLOPs (5/8 for 4). Measured for
    a (1024, 3072), one thread: 19 ms against 27 ms for the full product through
    oneDNN and 57 ms through ``torch.mm``. Elsewhere ``torch.mm(a, a.T)``.

    Returns:
        (H, H), a new tensor.
    """
    H = a.shape[0]
    if not (uses_onednn(a) and a.dim() == 2 and a.is_contiguous() and H >= 64 * strips):
        return torch.mm(a, a.T)
    out = torch.empty(H, H, device=a.device, dtype=a.dtype)
    step = -(-H // strips)
    for i in range(0, H, step):
        j = min(i + step, H)
        block = linear(a[i:j], a[i:])  # (j - i, H - i): rows i..j against rows i..H
        out[i:j, i:] = block
        out[j:, i:j] = block[:, j - i :].T  # the mirror image below the diagonal
    return out
