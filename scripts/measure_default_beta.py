"""Choose the default beta of a "hopfield" memory created with ``config: {}``.

Stores N Fashion-MNIST images in a UniversalHopfield(similarity, softmax(beta)) (the
similarity of ``HopfieldConfig``'s default unless --similarity says otherwise) and
recalls M of them from (a) half-masked cues (bottom half unknown, filled with 0) and
(b) noisy cues (Gaussian noise, std 0.2, clipped to [0, 1]), for a sweep of beta.
Reports the fraction recalled correctly by DESIGN.md's criterion (MSE to the stored
original < 0.001 for a partial cue, < 0.005 for a noisy cue) and the median MSE.

    .venv/bin/python scripts/measure_default_beta.py [--similarity euclidean] [--stored 1000] [--cues 200]
        [--betas 0.1 1 10] [--out results/default_beta.json]

Writes results/default_beta.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from memory_core import HopfieldConfig, UniversalHopfield
from memory_core.data import fashion_mnist, flatten
from memory_core.masks import bottom_half_unknown, pixel_mask_to_vector

BETAS = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0, 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--similarity", default=HopfieldConfig().similarity)
    parser.add_argument("--stored", type=int, default=1000)
    parser.add_argument("--cues", type=int, default=200)
    parser.add_argument("--betas", type=float, nargs="+", default=list(BETAS))
    parser.add_argument("--out", type=Path, default=Path("results/default_beta.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    images, _ = fashion_mnist("train", limit=args.stored)
    patterns = flatten(images)  # (N, 784)
    targets = patterns[: args.cues]  # (M, 784)
    gen = torch.Generator().manual_seed(0)
    mask = pixel_mask_to_vector(bottom_half_unknown(28, 28), 1).expand(args.cues, -1)  # (M, 784)
    half = targets * mask  # unknown pixels set to 0
    noisy = (targets + 0.2 * torch.randn(targets.shape, generator=gen)).clamp(0, 1)

    rows = []
    for beta in tqdm(args.betas, desc="beta"):
        m = UniversalHopfield(similarity=args.similarity, separation="softmax", beta=beta, device="cpu")
        m.store(patterns)
        out_half = m.retrieve(half, mask=mask)
        out_noisy = m.retrieve(noisy)
        mse_half = ((out_half - targets) ** 2).mean(dim=1)
        mse_noisy = ((out_noisy - targets) ** 2).mean(dim=1)
        rows.append(
            {
                "beta": beta,
                "half_ok": float((mse_half < 0.001).float().mean()),
                "half_median_mse": float(mse_half.median()),
                "noisy_ok": float((mse_noisy < 0.005).float().mean()),
                "noisy_median_mse": float(mse_noisy.median()),
            }
        )
    # Nearest-neighbour ceiling: is the closest stored pattern the right one?
    m = UniversalHopfield(similarity=args.similarity, separation="max", device="cpu")
    m.store(patterns)
    right = torch.arange(args.cues)
    nn_half = float((m.search(half, k=1, mask=mask)[1][:, 0] == right).float().mean())
    nn_noisy = float((m.search(noisy, k=1)[1][:, 0] == right).float().mean())

    print(
        f"N = {args.stored} stored Fashion-MNIST images, {args.cues} cues; {args.similarity} + softmax(beta)"
    )
    print(f"{'beta':>8} | {'half ok':>8} | {'half med MSE':>12} | {'noisy ok':>8} | {'noisy med MSE':>13}")
    for r in rows:
        print(
            f"{r['beta']:>8g} | {r['half_ok']:>8.3f} | {r['half_median_mse']:>12.2e} | "
            f"{r['noisy_ok']:>8.3f} | {r['noisy_median_mse']:>13.2e}"
        )
    print(f"nearest stored pattern is the right one: half {nn_half:.3f}, noisy {nn_noisy:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "similarity": args.similarity,
                "stored": args.stored,
                "cues": args.cues,
                "rows": rows,
                "nearest_right": {"half": nn_half, "noisy": nn_noisy},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
