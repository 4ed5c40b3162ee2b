"""Training accuracy and speed against scikit-surprise on the same folds, same machine, same run.

    bash bench/setup_peers.sh              # once: the peers' own environment
    python -m bench.bench_train            # writes bench/results/train.md

- ml-100k, 5 seeded random folds: RMSE and training seconds per fold, dotrec vs Surprise SVD
  (and SVD++ with --svdpp, slow).
- ml-1m-part1, one seeded 90/10 split: RMSE vs Surprise SVD and BaselineOnly; top-10 ranking
  (precision, recall, NDCG) vs the popularity baseline.
- Synthetic ML-1M-shaped set (`dotrec synth --like ml-1m`): epoch time and peak memory of training.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from app.config import Settings
from app.data.movielens import read_ratings_set
from app.data.splits import holdout_mask, k_fold_masks
from app.data.synth import PRESETS, write_synthetic
from app.data.training_set import TrainingSet
from app.jobs.evaluation import FoldReport, evaluate_fold
from app.ml.train import TrainConfig, fit
from bench.common import REPO_ROOT, machine, markdown_table, peak_rss_mib, shared_archive, write_result

PEERS_PYTHON = REPO_ROOT / "bench" / ".venv-peers" / "bin" / "python"
SEED = 0
#: fewer, larger steps: for data of ML-1M's size, most of the accuracy in a third of the time
FAST = TrainConfig(batch_size=2048, lr=1e-2, epochs=6)
FAST_FLAGS = "--batch-size 2048 --lr 0.01 --epochs 6"


def load(name: str, work: Path) -> tuple[str, TrainingSet]:
    archive = shared_archive(name)
    if archive is not None:
        return f"{name} (real)", TrainingSet.from_frame(read_ratings_set(archive).ratings)
    folder = write_synthetic(work / name, *PRESETS["ml-100k"], seed=SEED)
    return f"{name} absent: synthetic ml-100k shape", TrainingSet.from_frame(read_ratings_set(folder).ratings)


def run_peers(data: TrainingSet, masks: list[np.ndarray], algorithms: list[str], work: Path) -> dict:
    """Surprise's results on the same test masks, or {} when its environment is missing."""
    if not PEERS_PYTHON.exists():
        print("no bench/.venv-peers: run bench/setup_peers.sh for the Surprise columns")
        return {}
    folds = work / "folds.npz"
    np.savez(
        folds,
        users=data.user_ids[data.user_rows],
        movies=data.movie_ids[data.movie_rows],
        ratings=data.ratings,
        test_masks=np.stack(masks),
    )
    script = REPO_ROOT / "bench" / "peers" / "surprise_folds.py"
    output = subprocess.run(
        [str(PEERS_PYTHON), str(script), str(folds), *algorithms], capture_output=True, text=True, check=True
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def ours(
    data: TrainingSet, masks: list[np.ndarray], config: TrainConfig, ranking: bool, first_fold: int = 1
) -> list[FoldReport]:
    return [
        evaluate_fold(index, data.subset(~mask), data.subset(mask), Settings(), config, ranking)
        for index, mask in enumerate(masks, start=first_fold)
    ]


def warm_up(data: TrainingSet, config: TrainConfig) -> None:
    """One short fit before anything is timed: torch initialises its kernels on first use (about a
    second, once per process), which is no part of any fold's training."""
    sample = data.subset(np.arange(min(len(data), 5_000)))
    fit(sample, TrainConfig(**config.as_dict() | {"epochs": 1}), (0.0, 5.5))


def ml100k_cross_validation(work: Path, config: TrainConfig, svdpp: bool) -> str:
    name, data = load("ml-100k", work)
    warm_up(data, config)
    masks = list(k_fold_masks(len(data), 5, SEED))
    algorithms = ["SVD", "SVDpp"] if svdpp else ["SVD"]
    # fold by fold, ours then the peers', so that both see the same load on a shared machine
    reports, peers = [], {}
    for index, mask in enumerate(masks, start=1):
        reports += ours(data, [mask], config, ranking=False, first_fold=index)
        for peer, results in run_peers(data, [mask], algorithms, work).items():
            peers.setdefault(peer, []).extend(results)
    header = ["fold", "dotrec RMSE", "dotrec s", "bias-only RMSE"]
    header += [f"{peer} {what}" for peer in peers for what in ("RMSE", "s")]
    header += ["dotrec s / SVD s"] if "SVD" in peers else []
    rows = []
    for i, report in enumerate(reports):
        row = [
            report.fold,
            f"{report.rmse:.4f}",
            f"{report.train_seconds:.2f}",
            f"{report.bias_only_rmse:.4f}",
        ]
        for results in peers.values():
            row += [f"{results[i]['rmse']:.4f}", f"{results[i]['fit_seconds']:.2f}"]
        if "SVD" in peers:
            row.append(f"{report.train_seconds / peers['SVD'][i]['fit_seconds']:.2f}")
        rows.append(row)
    mean = [
        "mean",
        f"{np.mean([r.rmse for r in reports]):.4f}",
        f"{np.mean([r.train_seconds for r in reports]):.2f}",
        f"{np.mean([r.bias_only_rmse for r in reports]):.4f}",
    ]
    for results in peers.values():
        mean += [
            f"{np.mean([r['rmse'] for r in results]):.4f}",
            f"{np.mean([r['fit_seconds'] for r in results]):.2f}",
        ]
    if "SVD" in peers:
        svd_seconds = np.mean([r["fit_seconds"] for r in peers["SVD"]])
        mean.append(f"{np.mean([r.train_seconds for r in reports]) / svd_seconds:.2f}")
    rows.append(mean)
    return f"### {name}, 5-fold cross-validation (seed {SEED})\n\n" + markdown_table(header, rows)


def ml1m_part1_holdout(work: Path, config: TrainConfig) -> str:
    archive = shared_archive("ml-1m-part1")
    if archive is None:
        return "### ml-1m-part1: not present (../shared/data), skipped"
    data = TrainingSet.from_frame(read_ratings_set(archive).ratings)
    mask = holdout_mask(len(data), 0.1, SEED)
    (report,) = ours(data, [mask], config, ranking=True)
    (fast,) = ours(data, [mask], FAST, ranking=False)
    peers = run_peers(data, [mask], ["SVD", "BaselineOnly"], work)
    rows = [
        ["dotrec (defaults)", f"{report.rmse:.4f}", f"{report.mae:.4f}", f"{report.train_seconds:.2f}"],
        [f"dotrec ({FAST_FLAGS})", f"{fast.rmse:.4f}", f"{fast.mae:.4f}", f"{fast.train_seconds:.2f}"],
        ["bias only (dotrec's baseline)", f"{report.bias_only_rmse:.4f}", f"{report.bias_only_mae:.4f}", ""],
        ["global mean", f"{report.global_mean_rmse:.4f}", "", ""],
    ]
    rows += [
        [f"Surprise {peer}", f"{r[0]['rmse']:.4f}", "", f"{r[0]['fit_seconds']:.2f}"]
        for peer, r in peers.items()
    ]
    accuracy = markdown_table(["model", "RMSE", "MAE", "train s"], rows)
    ranking = markdown_table(
        ["top-10 ranking", "precision@10", "recall@10", "NDCG@10"],
        [
            [
                "dotrec (rating + popularity prior)",
                f"{report.precision_at_10:.4f}",
                f"{report.recall_at_10:.4f}",
                f"{report.ndcg_at_10:.4f}",
            ],
            [
                "popularity (training counts)",
                f"{report.popular_precision_at_10:.4f}",
                f"{report.popular_recall_at_10:.4f}",
                f"{report.popular_ndcg_at_10:.4f}",
            ],
        ],
    )
    return f"### ml-1m-part1 (real), seeded 90/10 split\n\n{accuracy}\n\n{ranking}"


def synthetic_training(args: tuple[str, dict]) -> dict:
    """Train on the synthetic set in `folder` in this (fresh) process: epoch times and peak memory."""
    folder, config = args
    before = peak_rss_mib()
    data = TrainingSet.from_frame(read_ratings_set(folder).ratings)
    loaded = peak_rss_mib()
    started = time.perf_counter()
    result = fit(data, TrainConfig(**config), (0.0, 5.5))
    return {
        "ratings": len(data),
        "epochs": len(result.history),
        "seconds_per_epoch": [round(h.seconds, 2) for h in result.history],
        "train_seconds": time.perf_counter() - started,
        "rss_start_mib": before,
        "rss_after_load_mib": loaded,
        "peak_rss_mib": peak_rss_mib(),
    }


def ml1m_shaped_memory(work: Path, config: TrainConfig) -> str:
    folder = write_synthetic(work / "synthetic-ml-1m", *PRESETS["ml-1m"], seed=SEED)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(synthetic_training, ((str(folder), asdict(config) | {"epochs": 3}),))
    epoch = np.mean(result["seconds_per_epoch"])
    rows = [
        [
            f"{result['ratings']:,}",
            result["epochs"],
            f"{epoch:.2f}",
            f"{result['ratings'] / epoch:,.0f}",
            f"{result['rss_after_load_mib']:.0f}",
            f"{result['peak_rss_mib']:.0f}",
        ]
    ]
    header = ["ratings", "epochs", "s/epoch", "ratings/s", "RSS after load MiB", "peak RSS MiB"]
    return "### synthetic ML-1M shape (6,040 x 3,706; `dotrec synth --like ml-1m`), training process\n\n" + (
        markdown_table(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--svdpp", action="store_true", help="also Surprise SVD++ on ml-100k (minutes)")
    arguments = parser.parse_args()
    config = TrainConfig()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        sections = [
            f"Machine: {machine()}. dotrec defaults: {config.as_dict()}.",
            ml100k_cross_validation(work, config, arguments.svdpp),
            ml1m_part1_holdout(work, config),
            ml1m_shaped_memory(work, config),
        ]
    write_result("train.md", "\n\n".join(sections))


if __name__ == "__main__":
    main()
