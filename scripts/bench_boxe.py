"""Our BoxE against PyKEEN's BoxE (and PyKEEN's TransE as a baseline) on Nations and UMLS.

Same dimension, negatives per fact, margin, adversarial temperature, epochs, batch size
and learning rate for all three (self-adversarial negative sampling, Adam). Training is
interleaved in blocks of epochs (ours, PyKEEN BoxE, PyKEEN TransE, ours, ...) so that the
machine's load hits all alike; time per epoch is the median over epochs that are not the
first of a block (which also pays each library's set-up). Evaluation: filtered link
prediction on the test set (train, valid and test filtered), both directions, realistic
ranks; PyKEEN's models are scored by PyKEEN's RankBasedEvaluator and, as a cross-check of
our evaluator, by ours.

    nice -n 10 .venv/bin/python scripts/bench_boxe.py            # writes results/bench_boxe.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memory_core.boxe import BoxE, filtered_ranks, rank_metrics
from memory_core.boxe.datasets import load_pykeen_dataset
from memory_core.boxe.facts import FactIndex

METRICS = ("mrr", "hits@1", "hits@3", "hits@10")


def pykeen_dataset(name: str):
    from pykeen.datasets import UMLS, Kinships, Nations

    return {"nations": Nations, "umls": UMLS, "kinships": Kinships}[name]()


class EpochClock:
    """PyKEEN training callback recording when each epoch ends."""

    def __new__(cls):
        from pykeen.training.callbacks import TrainingCallback

        class _Clock(TrainingCallback):
            def __init__(self):
                super().__init__()
                self.ends: list[float] = []

            def post_epoch(self, epoch, epoch_loss, **kwargs):
                self.ends.append(time.perf_counter())

        return _Clock()


class PyKEENRunner:
    """A PyKEEN model with its sLCWA training loop, trained block by block."""

    def __init__(self, model_name: str, dataset, args, seed: int):
        from pykeen.losses import NSSALoss
        from pykeen.models import BoxE as PBoxE
        from pykeen.models import TransE
        from pykeen.training import SLCWATrainingLoop

        loss = NSSALoss(margin=args.margin, adversarial_temperature=args.temperature, reduction="sum")
        tf = dataset.training
        if model_name == "boxe":
            self.model = PBoxE(
                triples_factory=tf,
                embedding_dim=args.dim,
                p=args.norm,
                tanh_map=True,
                loss=loss,
                random_seed=seed,
            )
        else:
            self.model = TransE(triples_factory=tf, embedding_dim=args.dim, loss=loss, random_seed=seed)
        opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.loop = SLCWATrainingLoop(
            model=self.model,
            triples_factory=tf,
            optimizer=opt,
            negative_sampler="basic",
            negative_sampler_kwargs={"num_negs_per_pos": args.negatives},
        )
        self.dataset, self.batch_size, self.done = dataset, args.batch_size, 0

    def train(self, epochs: int) -> tuple[list[float], float]:
        """Train ``epochs`` more; returns the durations of the epochs and the call's wall time."""
        clock = EpochClock()
        start = time.perf_counter()
        self.model.train()
        self.loop.train(
            self.dataset.training,
            num_epochs=self.done + epochs,
            batch_size=self.batch_size,
            continue_training=self.done > 0,
            use_tqdm=False,
            use_tqdm_batch=False,
            callbacks=[clock],
        )
        wall = time.perf_counter() - start
        self.done += epochs
        return [b - a for a, b in zip([start, *clock.ends], clock.ends)], wall

    def evaluate(self) -> tuple[dict, dict, float]:
        """PyKEEN's filtered metrics, ours on the same model, and PyKEEN's evaluation seconds."""
        from pykeen.evaluation import RankBasedEvaluator

        ds, model = self.dataset, self.model
        model.eval()
        start = time.perf_counter()
        result = RankBasedEvaluator(filtered=True).evaluate(
            model,
            ds.testing.mapped_triples,
            batch_size=256,
            use_tqdm=False,
            additional_filter_triples=[ds.training.mapped_triples, ds.validation.mapped_triples],
        )
        seconds = time.perf_counter() - start
        theirs = {"mrr": result.get_metric("both.realistic.inverse_harmonic_mean_rank")}
        for k in (1, 3, 10):
            theirs[f"hits@{k}"] = result.get_metric(f"both.realistic.hits_at_{k}")

        def score(rel, args, p):  # our evaluator's interface over PyKEEN's scorers
            with torch.no_grad():
                if p == 0:
                    return model.score_h(torch.stack([rel, args[:, 1]], 1))
                return model.score_t(torch.stack([args[:, 0], rel], 1))

        def rows(mapped):  # PyKEEN's (h, r, t) -> our [r, h, t]
            return mapped[:, [1, 0, 2]].long()

        test = rows(ds.testing.mapped_triples)
        known = FactIndex(
            map(
                tuple,
                torch.cat(
                    [rows(t.mapped_triples) for t in (ds.training, ds.validation, ds.testing)]
                ).tolist(),
            )
        )
        ranks = filtered_ranks(score, test, torch.full((len(test),), 2), known, ds.num_entities)
        return theirs, rank_metrics(ranks), seconds


def run_ours(model: BoxE, epochs: int) -> tuple[list[float], float]:
    ends: list[float] = []
    start = time.perf_counter()
    model.fit(epochs, progress=False, callback=lambda info: ends.append(time.perf_counter()))
    wall = time.perf_counter() - start
    return [b - a for a, b in zip([start, *ends], ends)], wall


def bench_dataset(name: str, args, seed: int, transe: bool) -> dict:
    splits = load_pykeen_dataset(name)
    dataset = pykeen_dataset(name)
    ours = BoxE(
        dim=args.dim,
        device="cpu",
        seed=seed,
        norm=args.norm,
        margin=args.margin,
        adversarial_temperature=args.temperature,
        negatives=args.negatives,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    ours.add_facts(splits.train)
    runners = {"pykeen_boxe": PyKEENRunner("boxe", dataset, args, seed)}
    if transe:
        runners["pykeen_transe"] = PyKEENRunner("transe", dataset, args, seed)
    epochs = {key: [] for key in ("ours", *runners)}
    walls = {key: 0.0 for key in epochs}
    done = 0
    while done < args.epochs:
        block = min(args.block, args.epochs - done)
        for key, blocks in epochs.items():
            times, wall = run_ours(ours, block) if key == "ours" else runners[key].train(block)
            blocks.append(times)
            walls[key] += wall
        done += block
        print(
            f"  {name} seed {seed}: {done}/{args.epochs} epochs, "
            + ", ".join(
                f"{k} {statistics.median(t for b in v for t in b[1:] or b):.3f} s/epoch"
                for k, v in epochs.items()
            ),
            flush=True,
        )
    out = {"seed": seed, "models": {}}
    start = time.perf_counter()
    metrics = ours.evaluate(splits.test, also_known=splits.valid)
    out["models"]["ours"] = {
        "metrics": {k: metrics[k] for k in METRICS},
        "eval_seconds": time.perf_counter() - start,
    }
    for key, runner in runners.items():
        theirs, ours_eval, seconds = runner.evaluate()
        out["models"][key] = {
            "metrics": theirs,
            "metrics_by_our_evaluator": {k: ours_eval[k] for k in METRICS},
            "eval_seconds": seconds,
        }
    for key, blocks in epochs.items():
        steady = [t for b in blocks for t in b[1:]] or [t for b in blocks for t in b]
        out["models"][key] |= {"epoch_seconds_median": statistics.median(steady), "train_seconds": walls[key]}
    return out


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for key in runs[0]["models"]:
        have = [r["models"][key] for r in runs if key in r["models"]]
        entry = {m: statistics.mean(h["metrics"][m] for h in have) for m in METRICS}
        entry["epoch_seconds_median"] = statistics.median(h["epoch_seconds_median"] for h in have)
        entry["eval_seconds"] = statistics.median(h["eval_seconds"] for h in have)
        entry["seeds"] = len(have)
        summary[key] = entry
    ratio = [
        r["models"]["pykeen_boxe"]["epoch_seconds_median"] / r["models"]["ours"]["epoch_seconds_median"]
        for r in runs
    ]
    summary["speedup_per_epoch_vs_pykeen_boxe"] = statistics.median(ratio)
    summary["mrr_gap_vs_pykeen_boxe"] = summary["ours"]["mrr"] - summary["pykeen_boxe"]["mrr"]
    summary["targets_met"] = {
        "mrr_within_0.02": summary["mrr_gap_vs_pykeen_boxe"] >= -0.02,
        "at_least_as_fast_per_epoch": summary["speedup_per_epoch_vs_pykeen_boxe"] >= 1.0,
    }
    return summary


def table(name: str, summary: dict) -> str:
    lines = [
        f"\n{name}: mean over seeds (filtered, both directions, realistic ranks)",
        f"{'model':<15}{'seeds':>6}{'MRR':>8}{'H@1':>8}{'H@3':>8}{'H@10':>8}{'s/epoch':>10}{'eval s':>9}",
    ]
    for key, entry in summary.items():
        if isinstance(entry, dict) and "mrr" in entry:
            lines.append(
                f"{key:<15}{entry['seeds']:>6}"
                + "".join(f"{entry[m]:>8.3f}" for m in METRICS)
                + f"{entry['epoch_seconds_median']:>10.3f}{entry['eval_seconds']:>9.3f}"
            )
    lines.append(
        f"ours per epoch: {summary['speedup_per_epoch_vs_pykeen_boxe']:.2f}x as fast as PyKEEN's BoxE; "
        f"MRR gap {summary['mrr_gap_vs_pykeen_boxe']:+.3f}; targets met: {summary['targets_met']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["nations", "umls"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--norm", type=int, default=2)
    parser.add_argument("--negatives", type=int, default=25)
    parser.add_argument("--margin", type=float, default=3.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--block", type=int, default=10, help="epochs per interleaved block")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--transe-seeds", type=int, default=1, help="train the TransE baseline for the first N seeds"
    )
    parser.add_argument("--out", default="results/bench_boxe.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import pykeen.version

    report = {
        "command": " ".join(["scripts/bench_boxe.py", *sys.argv[1:]]),
        "settings": vars(args),
        "machine": {
            "torch": torch.__version__,
            "pykeen": pykeen.version.get_version(),
            "python": platform.python_version(),
            "threads": args.threads,
        },
        "datasets": {},
    }
    for name in args.datasets:
        runs = [bench_dataset(name, args, seed, i < args.transe_seeds) for i, seed in enumerate(args.seeds)]
        summary = summarise(runs)
        report["datasets"][name] = {"runs": runs, "summary": summary}
        print(table(name, summary), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
