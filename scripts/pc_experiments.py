"""Fidelity of PCMemory against Salvatori et al. (NeurIPS 2021), side by side with
Hopfield networks on the same data and cues.

Noisy recall (the paper's Fig. 2 protocol): N patterns stored, each cue = pattern +
Gaussian noise of std 0.2 (not clipped), correct when the MSE to the stored pattern is
below 0.005. Data: natural-colour 32x32 patches (CIFAR-10 stand-in, D = 3072) and
Fashion-MNIST (D = 784); N in {100, 250, 500, 1000}, hidden width in {256, 512, 1024, 2048}.

Partial recall: N = 50 natural 64x64 patches (Tiny ImageNet stand-in, D = 12288); the
top 1/2, 1/4, 1/8 or 1/16 of the rows given, the rest to fill; correct when the MSE over
the whole image is below 0.001.

Methods, each reported under its own name:
- ``pc``: the PC network's own output (``PCMemory.retrieve`` with fit's defaults, or
  the ``--fit`` overrides, which each result row then records under "config");
- ``pc+nearest``: the stored pattern nearest (euclidean) to the PC output: a lookup
  after the network, a different method;
- ``mhn``: modern Hopfield network, dot similarity + softmax (beta = 1, as in
  Ramsauer et al. 2020 for unnormalised patterns); one update step;
- ``uhn``: the best universal Hopfield configuration of Millidge et al. (2022):
  manhattan similarity + softmax (beta = 1); one update step;
- ``pca``: projection onto the top-k principal components of the stored set, best k
  per setting (an oracle linear denoiser: the bound for any recall that projects).

    .venv/bin/python scripts/pc_experiments.py            # reduced grid, CPU, < 30 min unloaded
    .venv/bin/python scripts/pc_experiments.py --full     # the paper's grid (a GPU: device auto)
    .venv/bin/python scripts/pc_experiments.py --only partial --fit epochs=300 cycles=2 \
        --out results/pc_experiments_cycles2.jsonl        # another training, kept apart

Results go to results/pc_experiments*.json (one JSON line per setting as it finishes,
so a long run can be followed or resumed) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from memory_core import PCConfig, PCMemory, UniversalHopfield
from memory_core.checks import resolve_device
from memory_core.data import fashion_mnist, flatten, natural_patches
from memory_core.masks import pixel_mask_to_vector

NOISE_STD, NOISY_OK, PARTIAL_OK = 0.2, 0.005, 0.001


def dataset(name: str, n: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    if name == "patches32":
        return flatten(natural_patches(32, count=n)), (3, 32, 32)
    if name == "patches64":
        return flatten(natural_patches(64, count=n)), (3, 64, 64)
    if name == "fashion":
        return flatten(fashion_mnist("train", limit=n)[0]), (1, 28, 28)
    raise ValueError(name)


def mse(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (out.float().cpu() - x.float().cpu()).square().mean(1)


def summary(err: torch.Tensor, ok: float) -> dict:
    return {"correct": float((err < ok).float().mean()), "median_mse": float(err.median())}


def nearest(out: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """The stored pattern nearest (euclidean) to each output."""
    idx = torch.cdist(out.float(), stored.float()).argmin(1)
    return stored[idx]


def pca_denoise(stored: torch.Tensor, cue: torch.Tensor, ok: float) -> dict:
    """Best-k projection onto the stored set's principal components (k chosen on the result)."""
    mean = stored.mean(0)
    _, _, vh = torch.linalg.svd(stored - mean, full_matrices=False)
    best = None
    for k in (8, 16, 32, 64, 128, 256, 512, 1024):
        if k > vh.shape[0]:
            break
        v = vh[:k]
        res = summary(mse((cue - mean) @ v.T @ v + mean, stored), ok) | {"k": k}
        if best is None or (res["correct"], -res["median_mse"]) > (best["correct"], -best["median_mse"]):
            best = res
    return best


def hopfield(kind: str, stored: torch.Tensor, cue: torch.Tensor, mask, device) -> torch.Tensor:
    sim = "dot" if kind == "mhn" else "manhattan"
    m = UniversalHopfield(similarity=sim, separation="softmax", beta=1.0, device=device)
    m.store(stored)
    return m.retrieve(cue, mask=mask)


def run_noisy(data: str, n: int, width: int, latent: int, device, seed: int, overrides: dict) -> dict:
    x, _ = dataset(data, n)
    cue = x + NOISE_STD * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    pc = PCMemory(sizes=[latent, width, x.shape[1]], device=device, seed=seed, **overrides)
    hist = pc.fit(x, progress=False)
    start = time.perf_counter()
    out = pc.retrieve(cue).cpu()
    recall_s = time.perf_counter() - start
    res = {
        "experiment": "noisy",
        "data": data,
        "n": n,
        "width": width,
        "latent": latent,
        "epochs": len(hist),
        "stopped": hist.stopped,
        "fit_s": round(hist.seconds, 1),
        "recall_s": round(recall_s, 1),
        "final_energy": hist[-1],
        "pc": summary(mse(out, x), NOISY_OK),
        "pc+nearest": summary(mse(nearest(out, x), x), NOISY_OK),
        "mhn": summary(mse(hopfield("mhn", x, cue, None, device), x), NOISY_OK),
        "uhn": summary(mse(hopfield("uhn", x, cue, None, device), x), NOISY_OK),
        "pca": pca_denoise(x, cue, NOISY_OK),
        "cue": summary(mse(cue, x), NOISY_OK),
    }
    if overrides:
        res["config"] = overrides
    return res


def run_partial(n: int, width: int, latent: int, fractions, device, seed: int, overrides: dict) -> list[dict]:
    x, (c, h, w) = dataset("patches64", n)
    pc = PCMemory(sizes=[latent, width, x.shape[1]], device=device, seed=seed, **overrides)
    hist = pc.fit(x, progress=False)
    rows = []
    for frac in fractions:
        pix = torch.zeros(h, w, dtype=torch.bool)
        pix[: max(1, round(h * frac))] = True  # the top rows are given
        mask = pixel_mask_to_vector(pix, c).expand_as(x)
        cue = torch.where(mask, x, torch.zeros_like(x))
        start = time.perf_counter()
        out = pc.retrieve(cue, mask=mask).cpu()
        err = mse(out, x)
        rows.append(
            {
                "experiment": "partial",
                "data": "patches64",
                "n": n,
                "width": width,
                "latent": latent,
                "fraction": frac,
                "epochs": len(hist),
                "stopped": hist.stopped,
                "fit_s": round(hist.seconds, 1),
                "recall_s": round(time.perf_counter() - start, 1),
                "final_energy": hist[-1],
                "pc": summary(err, PARTIAL_OK),
                "pc_missed": (err >= PARTIAL_OK).nonzero().flatten().tolist(),  # which stored patterns
                "pc+nearest": summary(mse(nearest(out, x), x), PARTIAL_OK),
                "mhn": summary(mse(hopfield("mhn", x, cue, mask, device), x), PARTIAL_OK),
                "uhn": summary(mse(hopfield("uhn", x, cue, mask, device), x), PARTIAL_OK),
            }
            | ({"config": overrides} if overrides else {})
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = []
    noisy = [r for r in rows if r["experiment"] == "noisy"]
    if noisy:
        lines += [
            "| data | N | width | pc | pc median MSE | pc+nearest | MHN | UHN | PCA best k | epochs | fit s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in noisy:
            lines.append(
                f"| {r['data']} | {r['n']} | {r['width']} | {r['pc']['correct']:.0%} | {r['pc']['median_mse']:.4f} | "
                f"{r['pc+nearest']['correct']:.0%} | {r['mhn']['correct']:.0%} | {r['uhn']['correct']:.0%} | "
                f"{r['pca']['correct']:.0%} (k={r['pca']['k']}) | {r['epochs']} | {r['fit_s']} |"
            )
    partial = [r for r in rows if r["experiment"] == "partial"]
    if partial:
        lines += [
            "",
            "| given | N | width | pc | pc median MSE | pc+nearest | MHN | UHN | fit s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in partial:
            lines.append(
                f"| 1/{round(1 / r['fraction'])} | {r['n']} | {r['width']} | {r['pc']['correct']:.0%} | "
                f"{r['pc']['median_mse']:.5f} | {r['pc+nearest']['correct']:.0%} | {r['mhn']['correct']:.0%} | "
                f"{r['uhn']['correct']:.0%} | {r['fit_s']} |"
            )
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict:
    """["epochs=300", "cycles=2"] -> {"epochs": 300, "cycles": 2}, checked against PCConfig."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--fit takes KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(f"--fit {key}: {value!r} is not a JSON value") from None
    try:  # unknown keys or bad values fail here, before any work
        PCConfig.from_dict(overrides)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--fit: {exc}") from None
    return overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the paper's whole grid (meant for a GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--latent", type=int, default=256, help="top-layer width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=None, help="JSON lines file (default results/pc_experiments[_full].jsonl)"
    )
    ap.add_argument("--only", choices=["noisy", "partial"], default=None)
    ap.add_argument(
        "--settings",
        nargs="+",
        default=None,
        metavar="DATA:N:WIDTH",
        help="run only these noisy-recall settings, e.g. patches32:1000:1024 (no partial)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is faster on a loaded machine)"
    )
    ap.add_argument(
        "--fit",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="PCConfig overrides (JSON values), e.g. epochs=300 cycles=2; with --out, to keep them apart",
    )
    args = ap.parse_args()
    overrides = parse_overrides(args.fit)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.full:
        noisy = [
            (d, n, w)
            for d in ("patches32", "fashion")
            for w in (256, 512, 1024, 2048)
            for n in (100, 250, 500, 1000)
        ]
        partial_width, fractions = 1024, (1 / 2, 1 / 4, 1 / 8, 1 / 16)
    else:
        noisy = [(d, n, 512) for d in ("patches32", "fashion") for n in (100, 250)]
        partial_width, fractions = 512, (1 / 2, 1 / 4, 1 / 8, 1 / 16)
    if args.settings:
        noisy = [(d, int(n), int(w)) for d, n, w in (s.split(":") for s in args.settings)]
        args.only = "noisy"
    out = Path(args.out or f"results/pc_experiments{'_full' if args.full else ''}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = []
    if out.exists():  # resume: settings already measured are kept
        done = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    # A setting is done when measured with the same overrides (none = fit's defaults).
    have = {
        (r["experiment"], r["data"], r["n"], r["width"]) for r in done if r.get("config", {}) == overrides
    }
    jobs = []
    if args.only in (None, "noisy"):
        jobs += [("noisy", d, n, w) for d, n, w in noisy if ("noisy", d, n, w) not in have]
    if args.only in (None, "partial") and ("partial", "patches64", 50, partial_width) not in have:
        jobs.append(("partial", "patches64", 50, partial_width))
    start = time.perf_counter()
    print(f"device {device}, {len(jobs)} settings to run, {len(done)} already in {out}", flush=True)
    for kind, data, n, width in tqdm(jobs, desc="pc experiments", unit="setting"):
        if kind == "noisy":
            new = [run_noisy(data, n, width, args.latent, device, args.seed, overrides)]
        else:
            new = run_partial(n, width, args.latent, fractions, device, args.seed, overrides)
        with out.open("a") as fh:
            for r in new:
                fh.write(json.dumps(r) + "\n")
        done += new
        tqdm.write(table(new))
    print(
        f"\nwall time {time.perf_counter() - start:.0f} s on {device} ({torch.get_num_threads()} threads)\n"
    )
    print(table(done))


if __name__ == "__main__":
    main()
