"""Speed of PCMemory's hot loop: achieved FLOP/s against the matmul peak of the same
shapes and against autograd implementations of the same model, side by side in one
process.

For each batch size it times, on the same weights and data, interleaved (one run of
each variant per round, best of ``--repeats`` rounds: the least disturbed by load):

- ``hand``: ``PCMemory._relax`` as shipped (oneDNN products on the CPU, Gram-matrix
  message when cheaper, fused Adam);
- ``hand-direct`` (recall): the same loop forced to the direct message (two (B,H)x(H,D)
  products a step);
- ``autograd``: the textbook implementation a user would write: the energy as tensors
  with ``@``, its gradient from ``torch.autograd.grad`` at every step, the same step
  sizes lr / L_l and momentum, without the hand loop's restart check (the JSON's
  ``hand_restarts`` counts the steps that check undid while timing), ``torch.optim.Adam``
  with its defaults;
- ``autograd-onednn``: the same autograd code with its products through the same oneDNN
  kernels as ``hand`` (an autograd Function: oneDNN forward and backward, transposed
  weights cached) and the same fused Adam. hand / autograd-onednn is what the
  hand-written inference buys on its own; autograd-onednn / autograd is the backend;
- ``peak``: only the matrix products ``hand`` performs, same shapes and order, replayed
  alone twice: with ``torch.mm`` into preallocated outputs (MKL's sgemm) and with
  oneDNN's linear; the faster of the two is the matmul peak for these shapes on this
  machine, now.

"train" is one minibatch of inference learning (``train_steps`` relaxation steps plus the
local weight gradients and the Adam step); "recall" is ``recall_steps`` relaxation steps
on clamped cues. FLOPs count the matrix products (2 m n k each) a variant executes
(the hand loop's Gram matrix: its upper-triangle strips, as computed).

    .venv/bin/python scripts/bench_pc.py --threads 1    # CPU: batches 64, 256
    .venv/bin/python scripts/bench_pc.py --batches 64 256 1024 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from memory_core import PCMemory
from memory_core.checks import resolve_device
from memory_core.data import flatten, natural_patches
from memory_core.linalg import uses_onednn


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each fn, one call of each per round after a
    warm-up round, so that load on the machine hits every variant alike."""
    best = {name: float("inf") for name in fns}
    for r in tqdm(range(repeats + 1), desc="rounds", leave=False):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if r > 0:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


# --- oneDNN products with autograd, for the autograd-onednn variant --------------------------
def _onednn(x, w, b=None):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


_transposed: dict[int, tuple] = {}  # id(w) -> (w, version, w^T contiguous)


def _t(w: torch.Tensor) -> torch.Tensor:
    """w^T as a contiguous copy, cached per weight version (the weights change once per minibatch)."""
    hit = _transposed.get(id(w))
    if hit is None or hit[0] is not w or hit[1] != w._version:
        hit = (w, w._version, w.detach().T.contiguous())
        _transposed[id(w)] = hit
    return hit[2]


class OneDNNLinear(torch.autograd.Function):
    """x @ w.T + b with oneDNN's kernels forward and backward (float32, CPU)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return _onednn(x.contiguous(), w.detach(), b.detach())

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.contiguous()
        gx = _onednn(g, _t(w)) if ctx.needs_input_grad[0] else None  # (B, n_in)
        gw = _onednn(g.T.contiguous(), x.detach().T.contiguous()) if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


def plain_linear(x, w, b):
    return x @ w.T + b


# --- the autograd baselines ----------------------------------------------------------------------
def autograd_relax(
    pc: PCMemory, x: torch.Tensor, steps: int, lr: float, lin=plain_linear
) -> list[torch.Tensor]:
    """The same relaxation as PCMemory._relax, with gradients from autograd."""
    pi, act = pc.config.pi, torch.tanh
    lrs = pc._step_sizes(pi, lr)
    with torch.no_grad():
        xs = [pc.prior_mean.expand(x.shape[0], -1).clone()]
        for l in range(1, len(pc.sizes) - 1):
            xs.append(lin(act(xs[-1]), pc.weights[l - 1], pc.biases[l - 1]))
    vel = [torch.zeros_like(v) for v in xs]
    for _ in range(steps):
        leaves = [v.requires_grad_() for v in xs]
        layers = leaves + [x]
        energy = 0.0
        for l in range(1, len(layers)):
            err = layers[l] - lin(act(layers[l - 1]), pc.weights[l - 1], pc.biases[l - 1])
            energy = energy + 0.5 * pi[l] * err.square().sum()
        grads = torch.autograd.grad(energy, leaves)
        with torch.no_grad():
            xs = []
            for v, g, s, lr_l in zip(leaves, grads, vel, lrs):
                s.mul_(pc.config.momentum).add_(g, alpha=-lr_l)
                xs.append(v.detach() + s)
    return xs


def autograd_train(pc: PCMemory, x: torch.Tensor, opt: torch.optim.Optimizer, lin=plain_linear) -> None:
    xs = autograd_relax(pc, x, pc.config.train_steps, pc.config.infer_lr, lin)
    params = pc.weights + pc.biases
    for p in params:
        p.requires_grad_()
    layers = xs + [x]
    energy = 0.0
    for l in range(1, len(layers)):
        err = layers[l] - lin(torch.tanh(layers[l - 1]), pc.weights[l - 1], pc.biases[l - 1])
        energy = energy + 0.5 * pc.config.pi[l] * err.square().sum(1).mean()
    grads = torch.autograd.grad(energy, params)
    for p, g in zip(params, grads):
        p.requires_grad_(False)
        p.grad = g
    opt.step()


# --- FLOP counts and the matmul-only replay ------------------------------------------------------
def gram_strips(H: int, D: int, onednn: bool, strips: int = 4) -> list[tuple[int, int, int]]:
    """(m, k, n) of the products ``linalg.gram`` performs for W^T W, W: (D, H)."""
    if not (onednn and H >= 64 * strips):
        return [(H, D, H)]
    step = -(-H // strips)
    return [(min(i + step, H) - i, D, H - i) for i in range(0, H, step)]


def gemm_shapes(
    sizes: tuple[int, ...], batch: int, steps: int, gram: bool, train: bool, onednn: bool
) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product the hand-written loop performs, in order."""
    L, shapes = len(sizes), []
    H, D = sizes[-2], sizes[-1]
    shapes += [(batch, sizes[l - 1], sizes[l]) for l in range(1, L - 1)]  # top-down start
    if gram:
        shapes += [(batch, D, H)] + gram_strips(H, D, onednn)  # u = (x - b) W, G = W^T W
    per_step = [(batch, sizes[l - 1], sizes[l]) for l in range(1, L - 1)]  # hidden predictions
    per_step += [(batch, H, H)] if gram else [(batch, H, D), (batch, D, H)]
    per_step += [(batch, sizes[l + 1], sizes[l]) for l in range(L - 2)]  # messages upwards
    shapes += per_step * steps
    if train:  # errors at the end, then the weight gradients eps^T f
        shapes += [(batch, sizes[l - 1], sizes[l]) for l in range(1, L)]
        shapes += [(sizes[l], batch, sizes[l - 1]) for l in range(1, L)]
    else:
        shapes += [(batch, H, D)]  # the sensory prediction read out
    return shapes


def flops(shapes) -> float:
    return float(sum(2 * m * k * n for m, k, n in shapes))


def replay_mm(shapes, device, dtype):
    """Only these products, with torch.mm into preallocated outputs (MKL on the CPU)."""
    ops = []
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        ops.append((a, b, torch.empty(m, n, device=device, dtype=dtype)))

    def run():
        for a, b, out in ops:
            torch.mm(a, b, out=out)

    return run


def replay_onednn(shapes, device, dtype):
    """Only these products, through oneDNN's linear (which allocates its outputs)."""
    ops = [
        (torch.randn(m, k, device=device, dtype=dtype), torch.randn(n, k, device=device, dtype=dtype))
        for m, k, n in shapes
    ]

    def run():
        for a, w in ops:
            _onednn(a, w)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 3072])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--recall-steps", type=int, default=50, help="relaxation steps timed for recall")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/bench_pc.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), torch.float32
    sizes = tuple(args.sizes)
    pool = flatten(natural_patches(32, count=max(args.batches))).to(device)
    if pool.shape[1] != sizes[-1]:
        pool = torch.rand(max(args.batches), sizes[-1], generator=torch.Generator().manual_seed(0)).to(device)

    onednn = uses_onednn(pool)
    lin_fast = (lambda x, w, b: OneDNNLinear.apply(x, w, b)) if onednn else plain_linear
    rows = []
    for batch in args.batches:
        pc = PCMemory(sizes=sizes, device=device, batch_size=batch)
        x = pool[:batch].contiguous()
        pc.fit(x, epochs=2, progress=False)  # ordinary, trained weights; Adam state exists
        cfg = pc.config
        for task, steps in (("train", cfg.train_steps), ("recall", args.recall_steps)):
            H, D = sizes[-2], sizes[-1]
            gram = (2 * H * D + steps * 2 * batch * H) < steps * 4 * batch * D
            fns = {}
            if task == "train":
                pc._opt = pc._optimizer(0.0)  # lr 0: the weights stay put
                opt_plain = torch.optim.Adam(pc.weights + pc.biases, lr=0.0)  # torch's defaults
                opt_fast = torch.optim.Adam(
                    pc.weights + pc.biases, lr=0.0, fused=device.type in ("cpu", "cuda")
                )
                fns["hand"] = lambda: pc._train_batch(x)
                fns["autograd"] = lambda: autograd_train(pc, x, opt_plain)
                if onednn:
                    fns["autograd_onednn"] = lambda: autograd_train(pc, x, opt_fast, lin_fast)
            else:
                fns["hand"] = lambda: pc._predict(pc._relax(x, None, steps, cfg.infer_lr, cfg.pi))
                fns["direct"] = lambda: pc._predict(
                    pc._relax(x, None, steps, cfg.infer_lr, cfg.pi, use_gram=False)
                )
                fns["autograd"] = lambda: pc._predict(autograd_relax(pc, x, steps, cfg.infer_lr))
                if onednn:
                    fns["autograd_onednn"] = lambda: pc._predict(
                        autograd_relax(pc, x, steps, cfg.infer_lr, lin_fast)
                    )
            shapes = gemm_shapes(sizes, batch, steps, gram, task == "train", onednn)
            direct_shapes = gemm_shapes(sizes, batch, steps, False, task == "train", onednn)
            fns["peak_mm"] = replay_mm(shapes, device, dtype)
            if onednn:
                fns["peak_onednn"] = replay_onednn(shapes, device, dtype)
            if "direct" in fns:
                fns["peak_direct_mm"] = replay_mm(direct_shapes, device, dtype)
                if onednn:
                    fns["peak_direct_onednn"] = replay_onednn(direct_shapes, device, dtype)
            pc.restarts = 0
            t = interleaved(fns, device, args.repeats)
            peak = min(t["peak_mm"], t.get("peak_onednn", float("inf")))
            row = {
                "task": task,
                "batch": batch,
                "steps": steps,
                "gram": gram,
                "flops": flops(shapes),
                **{f"t_{k}": v for k, v in t.items()},
                "hand_gflops": flops(shapes) / t["hand"] / 1e9,
                "peak_mm_gflops": flops(shapes) / t["peak_mm"] / 1e9,
                "peak_gflops": flops(shapes) / peak / 1e9,
                "autograd_gflops": flops(direct_shapes) / t["autograd"] / 1e9,
                "pct_of_peak": 100.0 * peak / t["hand"],
                "speedup_vs_autograd": t["autograd"] / t["hand"],
                "hand_restarts": pc.restarts,
            }
            if "autograd_onednn" in t:
                row.update(
                    {
                        "autograd_onednn_gflops": flops(direct_shapes) / t["autograd_onednn"] / 1e9,
                        "speedup_vs_autograd_onednn": t["autograd_onednn"] / t["hand"],
                        "autograd_onednn_speedup_vs_autograd": t["autograd"] / t["autograd_onednn"],
                    }
                )
            if "direct" in t:
                peak_direct = min(t["peak_direct_mm"], t.get("peak_direct_onednn", float("inf")))
                row.update(
                    {
                        "direct_gflops": flops(direct_shapes) / t["direct"] / 1e9,
                        "direct_peak_gflops": flops(direct_shapes) / peak_direct / 1e9,
                        "direct_pct_of_peak": 100.0 * peak_direct / t["direct"],
                        "direct_speedup_vs_autograd": t["autograd"] / t["direct"],
                    }
                )
                if "autograd_onednn" in t:
                    row["direct_speedup_vs_autograd_onednn"] = t["autograd_onednn"] / t["direct"]
            rows.append(row)
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )

    na = "n/a"
    print(
        f"\nPCMemory hot loop, sizes {list(sizes)}, {device} ({torch.get_num_threads()} threads), float32, "
        f"oneDNN {'on' if onednn else 'off'}"
    )
    print(
        "| task | batch | steps | message | GFLOP/s hand | matmul peak GFLOP/s: torch.mm / oneDNN | % of peak "
        "| GFLOP/s autograd / autograd-oneDNN | speed-up vs autograd | vs autograd-oneDNN |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:

        def g(key, fmt="{:.1f}"):
            return fmt.format(r[key]) if key in r else na

        one = r["flops"] / r["t_peak_onednn"] / 1e9 if "t_peak_onednn" in r else None
        print(
            f"| {r['task']} | {r['batch']} | {r['steps']} | {'Gram' if r['gram'] else 'direct'} | "
            f"{r['hand_gflops']:.1f} | {r['peak_mm_gflops']:.1f} / {na if one is None else f'{one:.1f}'} | "
            f"{r['pct_of_peak']:.0f}% | {r['autograd_gflops']:.1f} / {g('autograd_onednn_gflops')} | "
            f"{r['speedup_vs_autograd']:.1f}x | {g('speedup_vs_autograd_onednn', '{:.1f}x')} |"
        )
        if "t_direct" in r:
            print(
                f"| {r['task']} | {r['batch']} | {r['steps']} | direct (forced) | {r['direct_gflops']:.1f} | "
                f"(best {r['direct_peak_gflops']:.1f}) | {r['direct_pct_of_peak']:.0f}% | | "
                f"{r['direct_speedup_vs_autograd']:.1f}x | {g('direct_speedup_vs_autograd_onednn', '{:.1f}x')} |"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "sizes": list(sizes),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onednn": onednn,
        "repeats": args.repeats,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
