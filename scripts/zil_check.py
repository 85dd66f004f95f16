"""Z-IL against backprop: max |dW_ZIL - dW_BP| under Z-IL's conditions and with one broken.

On 64 Fashion-MNIST test images with one-hot targets, float64, for an MLP and a CNN, the
gradients of 0.5 * sum((model(x) - y)^2) from ``memory_core.zil.zil_gradients`` against
autograd's. Writes results/zil.json and prints a Markdown table.

    .venv/bin/python scripts/zil_check.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from memory_core.data import fashion_mnist
from memory_core.zil import zil_gradients


def models() -> dict[str, nn.Sequential]:
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 64), nn.Sigmoid(), nn.Linear(64, 10)
    )
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ELU(),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.SiLU(),
        nn.Conv2d(16, 16, 3, padding="same", groups=4),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16 * 13 * 13, 32),
        nn.LeakyReLU(0.1),
        nn.Linear(32, 10),
    )
    return {"MLP (3 Linear)": mlp.double(), "CNN (3 Conv2d + 2 Linear)": cnn.double()}


def backprop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    (0.5 * ((model(x) - y) ** 2).sum()).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def main() -> None:
    images, labels = fashion_mnist("test", limit=64)
    x, y = images.double(), F.one_hot(labels, 10).double()
    variants = {
        "Z-IL (rate 1, layer l at step l)": {},
        "inference rate 0.99": {"inference_rate": 0.99},
        "update one step late": {"step_offset": 1},
    }
    rows = []
    for name, model in tqdm(models().items(), desc="models"):
        bp = backprop(model, x, y)
        scale = max(float(g.abs().max()) for g in bp.values())
        for label, kwargs in variants.items():
            zil = zil_gradients(model, x, y, **kwargs)
            gap = max(float((zil[k] - bp[k]).abs().max()) for k in bp)
            rows.append({"model": name, "variant": label, "max_abs_gap": gap, "max_abs_grad": scale})
    out = Path("results/zil.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "rows": rows}, indent=2))
    print("| model | variant | max abs(dW_ZIL - dW_BP) | max abs(dW_BP) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['max_abs_gap']:.1e} | {r['max_abs_grad']:.2f} |")


if __name__ == "__main__":
    main()
