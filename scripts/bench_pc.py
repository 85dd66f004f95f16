"""Speed of PCMemory's hot loop: achieved FLOP/s against the matmul peak of the same
shapes and against a plain autograd implementation of the same model, side by side in
one process.

For each batch size it times, on the same weights and data:

- ``hand``: ``PCMemory._relax`` as shipped (Gram-matrix message when cheaper);
- ``hand-direct``: the same loop forced to the direct message (two (B,H)x(H,D) products a step);
- ``autograd``: the textbook implementation: the energy written as tensors, its gradient
  from ``torch.autograd.grad`` at every step, the same step sizes lr / L_l and momentum,
  without the hand loop's restart check (the JSON's ``hand_restarts`` counts the steps
  that check undid while timing);
- ``gemm``: only the matrix products ``hand`` performs, same shapes and order, into
  preallocated outputs: the matmul peak for these shapes on this machine, now.

"train" is one minibatch of inference learning (``train_steps`` relaxation steps plus the
local weight gradients and the Adam step); "recall" is ``recall_steps`` relaxation steps
on clamped cues. FLOPs count the matrix products (2 m n k each) a variant executes.

    .venv/bin/python scripts/bench_pc.py                 # CPU: batches 64, 256
    .venv/bin/python scripts/bench_pc.py --batches 64 256 1024 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from memory_core import PCMemory
from memory_core.checks import resolve_device
from memory_core.data import flatten, natural_patches


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best-of-``repeats`` seconds of fn() after one warm-up call (best: least disturbed by load)."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


# --- the autograd baseline ---------------------------------------------------------------------
def autograd_relax(pc: PCMemory, x: torch.Tensor, steps: int, lr: float) -> list[torch.Tensor]:
    """The same relaxation as PCMemory._relax, with gradients from autograd."""
    pi, act = pc.config.pi, torch.tanh
    lrs = pc._step_sizes(pi, lr)
    with torch.no_grad():
        xs = [pc.prior_mean.expand(x.shape[0], -1).clone()]
        for l in range(1, len(pc.sizes) - 1):
            xs.append(act(xs[-1]) @ pc.weights[l - 1].T + pc.biases[l - 1])
    vel = [torch.zeros_like(v) for v in xs]
    for _ in range(steps):
        leaves = [v.requires_grad_() for v in xs]
        layers = leaves + [x]
        energy = 0.0
        for l in range(1, len(layers)):
            err = layers[l] - (act(layers[l - 1]) @ pc.weights[l - 1].T + pc.biases[l - 1])
            energy = energy + 0.5 * pi[l] * err.square().sum()
        grads = torch.autograd.grad(energy, leaves)
        with torch.no_grad():
            xs = []
            for v, g, s, lr_l in zip(leaves, grads, vel, lrs):
                s.mul_(pc.config.momentum).add_(g, alpha=-lr_l)
                xs.append(v.detach() + s)
    return xs


def autograd_train(pc: PCMemory, x: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    xs = autograd_relax(pc, x, pc.config.train_steps, pc.config.infer_lr)
    params = pc.weights + pc.biases
    for p in params:
        p.requires_grad_()
    layers = xs + [x]
    energy = 0.0
    for l in range(1, len(layers)):
        err = layers[l] - (torch.tanh(layers[l - 1]) @ pc.weights[l - 1].T + pc.biases[l - 1])
        energy = energy + 0.5 * pc.config.pi[l] * err.square().sum(1).mean()
    grads = torch.autograd.grad(energy, params)
    for p, g in zip(params, grads):
        p.requires_grad_(False)
        p.grad = g
    opt.step()


# --- FLOP counts and the matmul-only replay ------------------------------------------------------
def gemm_shapes(sizes: tuple[int, ...], batch: int, steps: int, gram: bool, train: bool) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product the hand-written loop performs, in order."""
    L, shapes = len(sizes), []
    H, D = sizes[-2], sizes[-1]
    shapes += [(batch, sizes[l - 1], sizes[l]) for l in range(1, L - 1)]  # top-down start
    if gram:
        shapes += [(batch, D, H), (H, D, H)]  # u = (x - b) W, G = W^T W
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


def gemm_replay(shapes, device, dtype):
    """A function doing only these products, into preallocated outputs."""
    ops = []
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        ops.append((a, b, torch.empty(m, n, device=device, dtype=dtype)))

    def run():
        for a, b, out in ops:
            torch.mm(a, b, out=out)

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

    rows = []
    for batch in args.batches:
        pc = PCMemory(sizes=sizes, device=device, batch_size=batch)
        x = pool[:batch].contiguous()
        pc.fit(x, epochs=2, progress=False)  # ordinary, trained weights; Adam state exists
        cfg = pc.config
        for task, steps in (("train", cfg.train_steps), ("recall", args.recall_steps)):
            H, D = sizes[-2], sizes[-1]
            gram = (2 * H * D + steps * 2 * batch * H) < steps * 4 * batch * D
            if task == "train":
                hand = lambda: pc._train_batch(x)  # noqa: E731
                direct = None
                opt = torch.optim.Adam(pc.weights + pc.biases, lr=0.0)  # lr 0: weights stay put
                pc._opt = pc._optimizer(0.0)
                auto = lambda: autograd_train(pc, x, opt)  # noqa: E731
            else:
                hand = lambda: pc._predict(pc._relax(x, None, steps, cfg.infer_lr, cfg.pi))  # noqa: E731
                direct = lambda: pc._predict(pc._relax(x, None, steps, cfg.infer_lr, cfg.pi, use_gram=False))  # noqa: E731
                auto = lambda: pc._predict(autograd_relax(pc, x, steps, cfg.infer_lr))  # noqa: E731
            shapes = gemm_shapes(sizes, batch, steps, gram, task == "train")
            direct_shapes = gemm_shapes(sizes, batch, steps, False, task == "train")
            t_gemm = timed(gemm_replay(shapes, device, dtype), device, args.repeats)
            pc.restarts = 0
            t_hand = timed(hand, device, args.repeats)
            t_auto = timed(auto, device, args.repeats)
            row = {
                "task": task, "batch": batch, "steps": steps, "gram": gram,
                "flops": flops(shapes), "t_hand": t_hand, "t_gemm": t_gemm, "t_autograd": t_auto,
                "hand_gflops": flops(shapes) / t_hand / 1e9,
                "peak_gflops": flops(shapes) / t_gemm / 1e9,
                "autograd_gflops": flops(direct_shapes) / t_auto / 1e9,
                "pct_of_peak": 100.0 * t_gemm / t_hand,
                "speedup_vs_autograd": t_auto / t_hand,
                "hand_restarts": pc.restarts,
            }
            if direct is not None:
                t_direct = timed(direct, device, args.repeats)
                t_gemm_direct = timed(gemm_replay(direct_shapes, device, dtype), device, args.repeats)
                row.update({
                    "t_direct": t_direct,
                    "direct_gflops": flops(direct_shapes) / t_direct / 1e9,
                    "direct_pct_of_peak": 100.0 * t_gemm_direct / t_direct,
                    "direct_speedup_vs_autograd": t_auto / t_direct,
                })
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    print(f"\nPCMemory hot loop, sizes {list(sizes)}, {device} ({torch.get_num_threads()} threads), float32")
    print("| task | batch | steps | message | GFLOP/s hand | GFLOP/s matmul peak (same shapes) | % of peak "
          "| GFLOP/s autograd | speed-up vs autograd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['batch']} | {r['steps']} | {'Gram' if r['gram'] else 'direct'} | "
              f"{r['hand_gflops']:.1f} | {r['peak_gflops']:.1f} | {r['pct_of_peak']:.0f}% | "
              f"{r['autograd_gflops']:.1f} | {r['speedup_vs_autograd']:.1f}x |")
        if "t_direct" in r:
            print(f"| {r['task']} | {r['batch']} | {r['steps']} | direct (forced) | {r['direct_gflops']:.1f} | | "
                  f"{r['direct_pct_of_peak']:.0f}% | {r['autograd_gflops']:.1f} | {r['direct_speedup_vs_autograd']:.1f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"sizes": list(sizes), "device": str(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
