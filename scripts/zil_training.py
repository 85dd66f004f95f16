"""Z-IL against backprop in training: an MLP, a CNN and an RNN on Fashion-MNIST.

Each model is trained twice from the same initial weights on the same minibatches with
the same optimizer (SGD, momentum 0.9, softmax cross-entropy summed over the batch):
once with backprop (autograd), once with Z-IL's weight updates
(``memory_core.zil.ZILTrainer``). Three measurements:

1. float64, ``--steps`` steps (200): the largest weight difference at the end and test
   accuracy (10 000 test images) along the way, for both (the papers' table shape);
2. float32, one full epoch: the drift Z-IL's round-off adds, next to the drift float32
   itself causes (backprop float32 against backprop float64, same minibatches);
3. cost per minibatch, same models, same process, interleaved: Z-IL's inference and
   learning against autograd's ``backward()`` (median of ``--reps``), and the whole step.

Writes results/zil_training.json and results/zil_training.md.

    nice -n 10 .venv/bin/python scripts/zil_training.py            # about 15 min on 2 busy cores
    .venv/bin/python scripts/zil_training.py --quick                # a smoke test, seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from memory_core.data import fashion_mnist
from memory_core.zil import ZILNetwork, ZILTrainer

LEARNING_RATE = {"MLP": 0.05, "CNN": 0.05, "RNN": 0.005}  # for the mean loss; divided by the batch size
# (the tanh RNN with momentum 0.9 and no clipping is unstable over an epoch at 0.02 in float64)


class RowRNN(nn.Module):
    """Many-to-one RNN: the 28 rows of an image in turn, a linear read-out of the last state."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.rnn = nn.RNN(28, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))  # (B, 28 steps, hidden)
        return self.head(out[:, -1])


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "MLP":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
    if name == "CNN":
        return nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip
    return RowRNN()


DESCRIPTION = {
    "MLP": "784-256-256-10, ReLU",
    "CNN": "conv 5x5 16 + max pool, conv 5x5 32 + max pool, 1568-128-10, ReLU",
    "RNN": "nn.RNN(28, 128, tanh) over the 28 rows, last state -> linear 10",
}


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in images.split(1000)])
    return float((predicted == labels).double().mean()), predicted


@torch.no_grad()
def max_weight_gap(a: nn.Module, b: nn.Module) -> tuple[float, float]:
    """(max |w_a - w_b| over all parameters, the same relative to max |w_b|)."""
    gap = max(float((p - q.to(p.dtype)).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    scale = max(float(q.abs().max()) for q in b.parameters())
    return gap, gap / scale


def bp_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    loss.backward()
    optimizer.step()
    return loss.item()


def autograd_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def gradient_errors(
    probe: ZILNetwork, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> dict[str, float]:
    """One minibatch, the same float32 weights: Z-IL's and autograd's float32 gradients against
    autograd's float64 gradient (max abs difference over max abs gradient, all parameters)."""
    exact = autograd_gradients(copy.deepcopy(model).double(), x.double(), y)
    scale = max(float(g.abs().max()) for g in exact.values())

    def error(grads: dict[str, torch.Tensor]) -> float:
        return max(float((grads[n].double() - g).abs().max()) for n, g in exact.items()) / scale

    return {
        "zil32": error(probe.learn(probe.feedforward(x, y))),
        "bp32": error(autograd_gradients(model, x, y)),
    }


def sgd(model: nn.Module, name: str, batch: int) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE[name] / batch, momentum=0.9)


def train_side_by_side(
    name, dtype, order, batch, train, test, eval_every, reference=False, drift_every=100
) -> dict:
    """Backprop and Z-IL from the same weights over the same minibatches (``order``: (steps, B));
    ``reference``: also backprop in float64, and the weight gaps every ``drift_every`` steps."""
    (train_x, train_y), (test_x, test_y) = train, test
    train_x, test_x = train_x.to(dtype), test_x.to(dtype)
    bp_model = build(name).to(dtype)
    zil_model = copy.deepcopy(bp_model)
    bp_opt = sgd(bp_model, name, batch)
    trainer = ZILTrainer(zil_model, sgd(zil_model, name, batch), loss="cross_entropy")
    ref_model = copy.deepcopy(bp_model).double() if reference else None  # backprop in float64
    ref_opt = sgd(ref_model, name, batch) if reference else None
    probe = ZILNetwork(bp_model, loss="cross_entropy") if reference else None
    curve, losses, drift = [], [], []

    def checkpoint(step: int) -> None:
        bp_acc, bp_pred = accuracy(bp_model, test_x, test_y)
        zil_acc, zil_pred = accuracy(zil_model, test_x, test_y)
        gap, rel = max_weight_gap(zil_model, bp_model)
        curve.append({
            "step": step, "bp_accuracy": bp_acc, "zil_accuracy": zil_acc,
            "predictions_that_differ": int((bp_pred != zil_pred).sum()), "max_weight_gap": gap, "relative_weight_gap": rel,
        })  # fmt: skip

    checkpoint(0)
    for step, idx in enumerate(tqdm(order, desc=f"{name} {str(dtype)[6:]}", leave=False), 1):
        x, y = train_x[idx], train_y[idx]
        bp_loss = bp_step(bp_model, bp_opt, x, y)
        zil_loss = trainer.step(x, y)
        if reference:
            bp_step(ref_model, ref_opt, x.double(), y)
            if step % drift_every == 0 or step == len(order):
                drift.append({
                    "step": step, "zil_vs_bp": max_weight_gap(zil_model, bp_model)[1],
                    "bp_vs_bp64": max_weight_gap(bp_model, ref_model)[1],
                    "zil_vs_bp64": max_weight_gap(zil_model, ref_model)[1],
                    "gradient_error": gradient_errors(probe, bp_model, x, y),
                })  # fmt: skip
        losses.append((bp_loss, zil_loss))
        if step % eval_every == 0 or step == len(order):
            checkpoint(step)
    result = {
        "steps": len(order), "curve": curve,
        "max_loss_gap": max(abs(a - b) for a, b in losses),
        "max_relative_loss_gap": max(abs(a - b) / abs(a) for a, b in losses),
    }  # fmt: skip
    if reference:
        result["drift"] = drift  # relative weight gaps: max |w_a - w_b| / max |w_b|
        result["bp32_vs_bp64"] = dict(
            zip(("max_weight_gap", "relative_weight_gap"), max_weight_gap(bp_model, ref_model))
        )
        result["zil32_vs_bp64"] = dict(
            zip(("max_weight_gap", "relative_weight_gap"), max_weight_gap(zil_model, ref_model))
        )
        ref_acc, ref_pred = accuracy(ref_model, test_x.double(), test_y)
        result["bp64_accuracy"] = ref_acc
        result["bp32_predictions_that_differ_from_bp64"] = int(
            (accuracy(bp_model, test_x, test_y)[1] != ref_pred).sum()
        )
    return result


def cost(name: str, dtype: torch.dtype, x: torch.Tensor, y: torch.Tensor, reps: int) -> dict:
    """Milliseconds per minibatch (medians), Z-IL and autograd interleaved on the same model."""
    model = build(name).to(dtype)
    x = x.to(dtype)
    network = ZILNetwork(model, loss="cross_entropy")
    times = {k: [] for k in ("zil_feedforward", "zil_learn", "bp_forward", "bp_backward")}

    def zil() -> None:
        t0 = time.perf_counter()
        state = network.feedforward(x, y)
        t1 = time.perf_counter()
        network.learn(state)
        t2 = time.perf_counter()
        times["zil_feedforward"].append(t1 - t0)
        times["zil_learn"].append(t2 - t1)

    def bp() -> None:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y, reduction="sum")
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        times["bp_forward"].append(t1 - t0)
        times["bp_backward"].append(t2 - t1)

    warm = 5
    for r in range(reps + warm):
        for run in (zil, bp) if r % 2 == 0 else (bp, zil):
            run()
    ms = {k: 1e3 * statistics.median(v[warm:]) for k, v in times.items()}
    full = []
    for _ in range(max(5, reps // 6)):  # the whole network at every step: (depth) times the work
        state = network.feedforward(x, y)
        t0 = time.perf_counter()
        network.learn(state, schedule="full")
        full.append(time.perf_counter() - t0)
    ms["zil_learn_full_network"] = 1e3 * statistics.median(full)
    ms["learn_over_backward"] = ms["zil_learn"] / ms["bp_backward"]
    ms["step_over_step"] = (ms["zil_feedforward"] + ms["zil_learn"]) / (ms["bp_forward"] + ms["bp_backward"])
    ms["full_network_over_backward"] = ms["zil_learn_full_network"] / ms["bp_backward"]
    ms["depth"] = network.plan(x).depth
    ms["value_nodes"] = len(network.plan(x))
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="float64 steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--reps", type=int, default=60, help="timed minibatches per model and dtype")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="MLP,CNN,RNN")
    parser.add_argument("--quick", action="store_true", help="1000 images, 20 steps: checks the script runs")
    parser.add_argument("--out", default="results/zil_training")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the existing .json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        out.with_suffix(".md").write_text(report(json.loads(out.with_suffix(".json").read_text())))
        return
    torch.set_num_threads(args.threads)
    limit = 1000 if args.quick else None
    steps, reps = (20, 6) if args.quick else (args.steps, args.reps)
    train = fashion_mnist("train", limit=limit)
    test = fashion_mnist("test", limit=limit)
    generator = torch.Generator().manual_seed(0)
    n = train[0].shape[0]
    epoch = torch.randperm(n, generator=generator)
    epoch = [epoch[i : i + args.batch] for i in range(0, n, args.batch)]  # the last one may be smaller
    names = args.models.split(",")
    results = {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__, "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "batch": args.batch, "optimizer": "SGD(momentum=0.9), lr = LR / batch on the summed loss",
        "learning_rates": LEARNING_RATE, "train_images": n, "test_images": test[0].shape[0],
        "models": {m: DESCRIPTION[m] for m in names}, "float64": {}, "float32_epoch": {}, "cost": {},
    }  # fmt: skip
    for name in names:
        results["float64"][name] = train_side_by_side(
            name, torch.float64, epoch[:steps], args.batch, train, test, args.eval_every
        )
        print(name, "float64:", json.dumps(results["float64"][name]["curve"][-1]))
        results["float32_epoch"][name] = train_side_by_side(
            name, torch.float32, epoch, args.batch, train, test, len(epoch), reference=True
        )
        print(
            name,
            "float32 epoch:",
            json.dumps({k: v for k, v in results["float32_epoch"][name].items() if k != "curve"}),
        )
        x, y = train[0][: args.batch], train[1][: args.batch]
        results["cost"][name] = {
            str(d)[6:]: cost(name, d, x, y, reps) for d in (torch.float32, torch.float64)
        }
        print(name, "cost:", json.dumps(results["cost"][name]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(results))
    print(report(results))


def summary(r: dict) -> list[str]:
    """The claims, checked against the numbers."""
    names = list(r["models"])
    f64 = {m: r["float64"][m] for m in names}
    gap = max(c["max_weight_gap"] for m in names for c in f64[m]["curve"])
    differ = sum(c["predictions_that_differ"] for m in names for c in f64[m]["curve"])
    drift = [p for m in names for p in r["float32_epoch"][m]["drift"]]
    zil_error = statistics.median(p["gradient_error"]["zil32"] for p in drift)
    bp_error = statistics.median(p["gradient_error"]["bp32"] for p in drift)
    ratios = [c["learn_over_backward"] for m in names for c in r["cost"][m].values()]
    steps = [c["step_over_step"] for m in names for c in r["cost"][m].values()]
    return [
        "Summary (computed from the JSON):",
        "",
        (
            f"- float64, {f64[names[0]]['steps']} steps: the largest weight gap between Z-IL and backprop, at any "
            f"checkpoint of any model, is {gap:.1e} ({'within' if gap <= 1e-8 else 'NOT within'} 1e-8); "
            f"{differ} test predictions differ over all checkpoints, so the accuracy curves are "
            f"{'identical' if differ == 0 else 'NOT identical'}."
        ),
        f32_sentence(r, names, zil_error, bp_error),
        (
            f"- cost: Z-IL's inference and learning take {min(ratios):.2f}x to {max(ratios):.2f}x the time of "
            f"autograd's backward (target at most 2x: {'met' if max(ratios) <= 2 else 'NOT met'}); a whole "
            f"step {min(steps):.2f}x to {max(steps):.2f}x."
        ),
    ]


def f32_sentence(r: dict, names: list[str], zil_error: float, bp_error: float) -> str:
    end = ", ".join(f"{m} {r['float32_epoch'][m]['curve'][-1]['relative_weight_gap']:.1e}" for m in names)
    reference = ", ".join(
        f"{m} {r['float32_epoch'][m]['bp32_vs_bp64']['relative_weight_gap']:.1e}" for m in names
    )
    return (
        f"- float32: against the float64 gradient, one minibatch's Z-IL gradient has a median error of "
        f"{zil_error:.1e} and autograd's float32 gradient {bp_error:.1e} ({zil_error / bp_error:.1f}x). Over the "
        f"epoch the runs part (relative weight gap at the end, Z-IL vs backprop float32: {end}; backprop "
        f"float32 vs float64: {reference})."
    )


def report(r: dict) -> str:
    """The write-up: tables from the JSON, and the command that made it."""
    names = list(r["models"])
    lines = [
        "# Z-IL trains like backprop: MLP, CNN and RNN on Fashion-MNIST",
        "",
        (
            f"Made by `{r['command']}` (torch {r['torch']}, {r['threads']} thread(s), {r['machine']}); "
            "the numbers below are in `zil_training.json` beside this file."
        ),
        "",
        (
            "Each model is trained twice from the same initial weights over the same minibatches "
            f"(batch {r['batch']}, one shuffled epoch of {r['train_images']} training images) with "
            "SGD (momentum 0.9, learning rate LR / batch on the softmax cross-entropy summed over the "
            f"batch; LR {r['learning_rates']}): once with autograd's gradients, once with Z-IL's "
            "weight updates (`memory_core.zil.ZILTrainer`). Accuracy is on all "
            f"{r['test_images']} test images."
        ),
        "",
        "| model | architecture |",
        "|---|---|",
        *[f"| {m} | {r['models'][m]} |" for m in names],
        "",
        *summary(r),
        "",
    ]
    f64 = r["float64"]
    steps = f64[names[0]]["steps"]
    lines += [
        f"## float64, {steps} steps: the same network",
        "",
        "| model | BP test accuracy | Z-IL test accuracy | max abs(W_ZIL - W_BP) | test predictions that differ | max abs(loss_ZIL - loss_BP) / loss_BP |",
        "|---|---|---|---|---|---|",
    ]
    for m in names:
        end = f64[m]["curve"][-1]
        lines.append(
            f"| {m} | {end['bp_accuracy']:.4f} | {end['zil_accuracy']:.4f} | {end['max_weight_gap']:.1e} | "
            f"{end['predictions_that_differ']} | {f64[m]['max_relative_loss_gap']:.1e} |"
        )
    lines += ["", "Test accuracy along the way (BP / Z-IL):", ""]
    lines.append("| step | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for i, point in enumerate(f64[names[0]]["curve"]):
        cells = [
            f"{f64[m]['curve'][i]['bp_accuracy']:.4f} / {f64[m]['curve'][i]['zil_accuracy']:.4f}"
            for m in names
        ]
        lines.append(f"| {point['step']} | " + " | ".join(cells) + " |")
    f32 = r["float32_epoch"]
    lines += [
        "",
        f"## float32, one epoch ({f32[names[0]]['steps']} steps): the drift",
        "",
        (
            "Z-IL forms each error as a difference of two values, eps = x - mu with x = mu + "
            "feedback, so float32 round-off enters at every value node; training then carries it "
            "along. For scale, the last columns put float32 backprop itself against float64 backprop "
            "over the same minibatches."
        ),
        "",
        (
            "| model | BP accuracy | Z-IL accuracy | max abs(W_ZIL - W_BP) / max abs(W_BP) | test predictions that differ "
            "| BP float64 accuracy | BP float32 vs BP float64: relative weight gap | predictions that differ |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in names:
        end, run = f32[m]["curve"][-1], f32[m]
        lines.append(
            f"| {m} | {end['bp_accuracy']:.4f} | {end['zil_accuracy']:.4f} | {end['relative_weight_gap']:.1e} | "
            f"{end['predictions_that_differ']} | {run['bp64_accuracy']:.4f} | "
            f"{run['bp32_vs_bp64']['relative_weight_gap']:.1e} | {run['bp32_predictions_that_differ_from_bp64']} |"
        )
    lines += [
        "",
        (
            "How the gaps grow along the epoch: the weights (max abs(W_a - W_b) / max abs(W_b); Z-IL "
            "float32 against backprop float32, backprop float32 against backprop float64), and one "
            "minibatch's gradient at backprop's float32 weights of that step (Z-IL float32 and autograd "
            "float32 against autograd float64, max abs error / max abs gradient):"
        ),
        "",
        (
            "| model | step | weights: Z-IL vs BP | weights: BP32 vs BP64 | gradient error: Z-IL float32 "
            "| gradient error: autograd float32 |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for m in names:
        for point in f32[m]["drift"]:
            g = point["gradient_error"]
            lines.append(
                f"| {m} | {point['step']} | {point['zil_vs_bp']:.1e} | {point['bp_vs_bp64']:.1e} | "
                f"{g['zil32']:.1e} | {g['bp32']:.1e} |"
            )
    lines += [
        "",
        "## Cost per minibatch",
        "",
        (
            f"Medians over the timed minibatches (batch {r['batch']}), Z-IL and autograd interleaved on "
            "the same model in the same process. *learn*: Z-IL's inference and weight updates after "
            "its feed-forward pass, against autograd's `backward()` after its forward pass; *step*: "
            "both passes. *full network*: the same updates by recomputing every node at every "
            "inference step (`schedule='full'`), what the network does without the wavefront."
        ),
        "",
        "| model | dtype | value nodes | inference steps | Z-IL learn (ms) | backward (ms) | learn / backward | step / step | full network / backward |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in names:
        for dtype, c in r["cost"][m].items():
            lines.append(
                f"| {m} | {dtype} | {c['value_nodes']} | {c['depth']} | {c['zil_learn']:.2f} | {c['bp_backward']:.2f} | "
                f"{c['learn_over_backward']:.2f} | {c['step_over_step']:.2f} | {c['full_network_over_backward']:.1f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
