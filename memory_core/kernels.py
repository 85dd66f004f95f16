"""Compiled CPU kernel for masked L1 (manhattan) distances, with a torch fallback.

``l1_distances(keys (N, D), cue (B, D), mask (B, D) | None, scale (B,) | None) -> (B, N)``
sums ``|cue - key|`` over each cue's known entries (times a per-cue ``scale``). On the
CPU in float32 it runs the C kernel in ``csrc/l1_distance.c``: register tiles of 4 cues
x 3-4 patterns share every load and blocks of patterns are reused from cache by blocks
of cues, so a batch of cues is compute-bound (faiss's ``IndexFlat(METRIC_L1)`` streams
every pattern from memory once per cue; ``torch.cdist(p=1)`` runs a scalar loop per
pair). A mask costs nothing extra: it is an AND on the float's bits that clears the
sign (abs) or the whole entry.

``l1_softmax(keys, values, cue, mask, scale, beta)`` is softmax retrieval over the same
scores in one pass over the keys: each block of keys gets its distances and, while still
in cache, its weighted values folded into a running max / sum (online softmax), so the
stored patterns are read from memory once, as faiss's search reads them, not twice.

The kernel is plain C (GCC vector extensions, OpenMP), compiled with the system C
compiler on first use and cached under ``$AMS_KERNEL_CACHE`` (default
``~/.cache/memory_core/kernels``), keyed by the source, the flags and the compiler. It
is loaded with ctypes, so it needs no Python headers, no ninja and no torch headers, and
the GIL is released while it runs. Vector width follows the CPU: AVX-512 (16 floats),
AVX2 (8) or the baseline (4). Where there is no compiler at run time (the Docker
image), ``python -m memory_core.kernels --prebuild DIR`` compiles all three ahead of
time and ``AMS_KERNEL_PREBUILT=DIR`` loads the one the CPU runs. Where there is
neither, or the build fails, or for CUDA tensors and float64, the same sums come from torch (``cdist`` when unmasked,
bounded broadcast blocks when masked), with a one-time warning for a failed build.
``AMS_KERNELS=0`` turns the compiled kernel off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "advise_huge_pages",
    "kernel_available",
    "kernel_info",
    "l1_distances",
    "l1_distances_torch",
    "l1_softmax",
    "prebuild",
]

_SOURCE = Path(__file__).with_name("csrc") / "l1_distance.c"
_ABS_BITS = 0x7FFFFFFF  # AND with this clears a float32's sign bit: |x|
# Elements of the (B, n, D) difference block the torch fallback may build at once.
_FALLBACK_BUDGET = 1 << 22

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_info: dict[str, str] = {}


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# Each vector width: the CPU flags it needs, and the compiler flags that use them.
_ISAS = {
    "avx512": (
        {"avx512f", "avx512vl", "avx2", "fma"},
        ["-mavx512f", "-mavx512vl", "-mavx2", "-mfma", "-DW=16"],
    ),
    "avx2": ({"avx2", "fma"}, ["-mavx2", "-mfma", "-DW=8"]),
    "baseline": (set(), ["-DW=4"]),
}
_BASE_FLAGS = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-fopenmp"]
_LIBS = ["-lm"]  # exp() of the one-pass softmax; after the source, so that --as-needed keeps it


def _vector_flags() -> tuple[list[str], str]:
    """Compiler flags for the widest vectors this CPU runs, and a name for them."""
    flags = _cpu_flags()
    for isa, (needs, cflags) in _ISAS.items():  # widest first
        if needs <= flags:
            return cflags, isa
    return _ISAS["baseline"][1], "baseline"


def prebuild(folder: str | os.PathLike) -> list[Path]:
    """Compile every vector width into ``folder`` as ``l1_distance-<isa>.so``.

    For images that run where there is no compiler (the Docker runtime stage): point
    ``AMS_KERNEL_PREBUILT`` at the folder and each process loads the widest variant
    its CPU runs. Compiling AVX-512 code needs no AVX-512 CPU; only running it does.
    """
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler found (gcc or $CC)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for isa, (_, cflags) in _ISAS.items():
        target = out / f"l1_distance-{isa}.so"
        run = subprocess.run(
            [cc, *_BASE_FLAGS, *cflags, str(_SOURCE), *_LIBS, "-o", str(target)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if run.returncode != 0:
            raise RuntimeError(f"{cc} failed to build the {isa} kernel:\n{run.stderr[-2000:]}")
        built.append(target)
    return built


def _prebuilt() -> tuple[Path, str] | None:
    """The prebuilt variant for this CPU under $AMS_KERNEL_PREBUILT, if there is one."""
    folder = os.environ.get("AMS_KERNEL_PREBUILT")
    if not folder:
        return None
    _, isa = _vector_flags()
    path = Path(folder) / f"l1_distance-{isa}.so"
    return (path, isa) if path.exists() else None


def _cache_dir() -> Path:
    if "AMS_KERNEL_CACHE" in os.environ:
        return Path(os.environ["AMS_KERNEL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "memory_core" / "kernels"


def _compiler_version(cc: str) -> str:
    run = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    return run.stdout.splitlines()[0] if run.returncode == 0 and run.stdout else cc


def _build() -> ctypes.CDLL:
    """Load the prebuilt kernel, or compile it (once per source/flags/compiler, cached
    on disk) and load it."""
    prebuilt = _prebuilt()
    if prebuilt is not None:
        return _load(*prebuilt, compiler="prebuilt")
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler found (gcc or $CC), and no prebuilt kernel (AMS_KERNEL_PREBUILT)")
    vec_flags, isa = _vector_flags()
    flags = [*_BASE_FLAGS, *vec_flags]
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(
        source + " ".join([*flags, *_LIBS]).encode() + _compiler_version(cc).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"l1_distance-{isa}-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the target and rename: another process may be building it too.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            run = subprocess.run(
                [cc, *flags, str(_SOURCE), *_LIBS, "-o", tmp], capture_output=True, text=True, timeout=300
            )
            if run.returncode != 0:
                raise RuntimeError(f"{cc} failed to build {_SOURCE.name}:\n{run.stderr[-2000:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return _load(target, isa, compiler=cc)


def _load(path: Path, isa: str, compiler: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    fn = lib.ams_l1_distances
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, i64, ptr, i64, ptr, i64, ptr, i64, ptr, i64, i64, i64, ctypes.c_int]
    fn.restype = None
    fused = lib.ams_l1_softmax
    fused.argtypes = [
        ptr,
        i64,
        ptr,
        i64,
        ptr,
        i64,
        ptr,
        i64,
        ptr,
        ctypes.c_double,
        i64,
        ptr,
        ptr,
        ptr,
        i64,
        ctypes.c_int,
    ]
    fused.restype = ctypes.c_int
    _info.update(path=str(path), isa=isa, compiler=compiler)
    return lib


def _kernel() -> ctypes.CDLL | None:
    """The loaded kernel, or None (disabled, or the build failed: warned once)."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("AMS_KERNELS", "1") == "0":
                _info["disabled"] = "AMS_KERNELS=0"
            else:
                try:
                    _lib = _build()
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    _info["error"] = str(exc)
                    warnings.warn(
                        f"memory_core: compiled L1 kernel unavailable, using torch ({exc})",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            _tried = True
    return _lib


def kernel_available() -> bool:
    """True when the compiled L1 kernel is built and loaded (builds it on first call)."""
    return _kernel() is not None


def kernel_info() -> dict[str, str]:
    """Where the kernel lives and which vectors it uses, or why it is not used."""
    _kernel()
    return dict(_info)


_MADV_HUGEPAGE = 14  # linux/mman.h
_HUGE_PAGE = 1 << 21


def advise_huge_pages(buf: Tensor) -> bool:
    """Ask Linux to back a large, not yet touched CPU buffer with 2 MiB pages.

    A scan over the stored patterns streams through memory; with 4 KiB pages it misses
    the TLB every 4 KiB and the hardware prefetcher stops at every page boundary.
    Transparent huge pages are often on "madvise" only, so the memory asks for them
    (measured: ~10% on a single-cue L1 scan over 1.2 GB). No-op elsewhere or on failure.

    Returns:
        True when the advice was taken.
    """
    if (
        buf.device.type != "cpu"
        or buf.nbytes < 16 * _HUGE_PAGE
        or not hasattr(os, "uname")
        or os.uname().sysname != "Linux"
    ):
        return False
    start = (buf.data_ptr() + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)  # whole huge pages inside the buffer
    length = (buf.data_ptr() + buf.nbytes - start) & ~(_HUGE_PAGE - 1)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc.madvise(start, length, _MADV_HUGEPAGE) == 0
    except (OSError, AttributeError):
        return False


def _blocks(batch: int, dim: int) -> tuple[int, int]:
    """(cues, patterns) per block: a block of patterns (~256 KiB) stays in L2 while a
    block of cues passes over it; a lone cue streams large blocks of patterns."""
    if batch == 1:
        return 1, 1024
    return 32, max(8, (1 << 16) // dim)


def l1_distances(
    keys: Tensor, cue: Tensor, mask: Tensor | None = None, scale: Tensor | None = None
) -> Tensor:
    """Sum of |cue - key| over each cue's known entries, times a per-cue factor.

    Arguments:
        keys: (N, D) stored patterns.
        cue: (B, D) cues, same dtype and device.
        mask: (B, D) bool, True = known entry, or None (every entry known).
        scale: (B,) or (B, 1) factor per cue (e.g. -D/k: masked scores), or None (1).
            The kernel applies it as it writes, so that no (B, N) pass follows.

    Returns:
        (B, N) in the keys' dtype.
    """
    lib = _kernel() if keys.device.type == "cpu" and keys.dtype == torch.float32 else None
    if lib is None or cue.dtype != torch.float32:
        dist = l1_distances_torch(keys, cue, mask)
        return dist if scale is None else dist.mul_(scale.reshape(-1, 1).to(dist.dtype))
    keys, cue = keys.contiguous(), cue.contiguous()
    (n, d), b = keys.shape, cue.shape[0]
    if mask is None:
        bits = torch.full((1, d), _ABS_BITS, dtype=torch.int32)  # one row, shared by all cues
        stride = 0
    else:
        bits = torch.where(mask, _ABS_BITS, 0).to(torch.int32).contiguous()  # (B, D)
        stride = d
    factors = torch.ones(b) if scale is None else scale.reshape(-1).to(torch.float32).contiguous()  # (B,)
    out = torch.empty(b, n, dtype=torch.float32)  # (B, N)
    qblock, kblock = _blocks(b, d)
    # A lone cue is one memory-bound stream: a second thread adds little bandwidth and,
    # on a busy machine, costs a wait for a free core (measured: slower than one).
    # Concurrent requests still run in parallel: ctypes releases the GIL.
    threads = 1 if b == 1 else torch.get_num_threads()
    lib.ams_l1_distances(
        keys.data_ptr(),
        n,
        cue.data_ptr(),
        b,
        bits.data_ptr(),
        stride,
        factors.data_ptr(),
        d,
        out.data_ptr(),
        n,
        qblock,
        kblock,
        threads,
    )
    return out


# Largest batch the one-pass softmax kernel takes; larger ones take the two-pass path
# (tiled distances, then a matmul with the values). Measured against the two-pass path on
# Fashion-MNIST (N = 20 000) and 32x32 patches (N = 10 000), batches 16-256, beta 1 and
# 1e-6: the one-pass kernel took 0.34-0.97 of its time at every one of them.
FUSED_MAX_BATCH = 256
# Bytes of keys (or values) per block of the one-pass kernel: the block is still in L1/L2
# when its weighted rows are summed. 32, 64 and 128 KiB measured alike (within noise).
_FUSED_BLOCK_BYTES = 1 << 16


def _fused_rows(dim: int, value_dim: int) -> int:
    """Patterns per block of the one-pass kernel (~64 KiB of keys, and of values)."""
    return max(4, _FUSED_BLOCK_BYTES // (4 * max(dim, value_dim)))


def l1_softmax(
    keys: Tensor,
    values: Tensor | None,
    cue: Tensor,
    mask: Tensor | None,
    scale: Tensor,
    beta: float,
) -> tuple[Tensor | None, Tensor, Tensor] | None:
    """Softmax retrieval over masked L1 scores in one pass over the keys (compiled kernel).

    With ``logit = beta * scale * masked_L1(cue, key)`` (scale < 0: the similarity's -1
    or -D/k), per cue: ``out = softmax(logits) @ values``, ``lmax = max(logits)`` and
    ``lsum = sum(exp(logits - lmax))``. Each block of keys gets its distances and, while
    still in cache, its weighted values folded into a running max / sum (online
    softmax); ``values`` may be the keys themselves (auto-associative: no second stream)
    or other rows (hetero: only rows with a non-zero weight are read).

    Arguments:
        keys: (N, D); values: (N, Dv) or None (only lmax and lsum); cue: (B, D);
        mask: (B, D) bool or None; scale: (B,) or (B, 1); beta: > 0.

    Returns:
        (out (B, Dv) float32 or None, lmax (B,) float64, lsum (B,) float64), or None where
        the kernel does not apply (not float32 on the CPU, no kernel, batch over
        ``FUSED_MAX_BATCH``): the caller then takes the two-pass path.
    """
    tensors = [keys, cue] + ([] if values is None else [values])
    if (
        cue.shape[0] > FUSED_MAX_BATCH
        or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors)
        or _kernel() is None
    ):
        return None
    keys, cue = keys.contiguous(), cue.contiguous()
    (n, d), b = keys.shape, cue.shape[0]
    values = None if values is None else values.contiguous()
    dv = d if values is None else values.shape[1]
    if mask is None:
        bits, stride = torch.full((1, d), _ABS_BITS, dtype=torch.int32), 0  # one row for all cues
    else:
        bits, stride = torch.where(mask, _ABS_BITS, 0).to(torch.int32).contiguous(), d  # (B, D)
    factors = scale.reshape(-1).to(torch.float32).contiguous()  # (B,)
    out = None if values is None else torch.empty(b, dv, dtype=torch.float32)  # (B, Dv)
    lmax = torch.empty(b, dtype=torch.float64)  # (B,)
    lsum = torch.empty(b, dtype=torch.float64)  # (B,)
    # A lone cue is one memory-bound stream: one thread (as for l1_distances).
    threads = 1 if b == 1 else torch.get_num_threads()
    status = _lib.ams_l1_softmax(
        keys.data_ptr(),
        n,
        None if values is None else values.data_ptr(),
        dv,
        cue.data_ptr(),
        b,
        bits.data_ptr(),
        stride,
        factors.data_ptr(),
        float(beta),
        d,
        None if out is None else out.data_ptr(),
        lmax.data_ptr(),
        lsum.data_ptr(),
        _fused_rows(d, dv),
        threads,
    )
    if status != 0:
        raise MemoryError("the one-pass L1 softmax kernel could not allocate its running sums")
    return out, lmax, lsum


def l1_distances_torch(keys: Tensor, cue: Tensor, mask: Tensor | None = None) -> Tensor:
    """The same sums as ``l1_distances`` in plain torch (any device and dtype).

    Unmasked: ``torch.cdist(p=1)``, which builds no (B, N, D) block. Masked: broadcast
    differences over blocks of patterns of at most ``_FALLBACK_BUDGET`` elements.
    """
    if mask is None:
        return torch.cdist(cue[None], keys[None], p=1)[0]  # (B, N)
    (n, d), b = keys.shape, cue.shape[0]
    out = torch.empty(b, n, dtype=keys.dtype, device=keys.device)  # (B, N)
    maskf = mask.to(keys.dtype)[:, None, :]  # (B, 1, D)
    rows = max(1, _FALLBACK_BUDGET // (b * d))
    for start in range(0, n, rows):
        diff = (cue[:, None, :] - keys[None, start : start + rows]).abs_()  # (B, n, D)
        out[:, start : start + rows] = (diff * maskf).sum(dim=2)
    return out


if __name__ == "__main__":  # python -m memory_core.kernels --prebuild DIR
    import argparse

    parser = argparse.ArgumentParser(description="Compile every vector width of the L1 kernel into a folder.")
    parser.add_argument("--prebuild", required=True, metavar="DIR")
    for path in prebuild(parser.parse_args().prebuild):
        print(path)
