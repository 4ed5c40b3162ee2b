"""Training accuracy and speed against scikit-surprise on the same folds, same machine, same run.

    bash bench/setup_peers.sh              # once: the peers' own environment
    python -m bench.bench_train            # writes bench/results/train.md

dotrec runs with the defaults `dotrec train` would pick for each training part
(`TrainConfig.for_ratings`), each fit followed by the peer's on the same ratings, so that both
see the same load on a shared machine.

- ml-100k, 5 seeded random folds: RMSE and training seconds per fold, dotrec vs Surprise SVD
  (and SVD++ with --svdpp, slow).
- ml-1m-part1, one seeded 90/10 split, fitted --repeats times (dotrec, then SVD, in turn): RMSE
  and seconds vs Surprise SVD and BaselineOnly, and vs the fixed defaults of before the size
  rule (`TrainConfig()`); top-10 ranking (precision, recall, NDCG) vs the popularity baseline.
- Synthetic ML-1M-shaped set (`dotrec synth --like ml-1m`): epoch time and peak memory of training.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
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
#: the defaults of before the size rule, whatever the size: the reference row on ml-1m-part1
FIXED = TrainConfig()


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
    data: TrainingSet,
    masks: list[np.ndarray],
    config: TrainConfig | None,
    ranking: bool,
    first_fold: int = 1,
) -> list[FoldReport]:
    """dotrec on each training part (the data less a mask): with `config`, or with None the
    defaults for the part's size, as `dotrec train` picks them."""
    reports = []
    for index, mask in enumerate(masks, start=first_fold):
        train = data.subset(~mask)
        chosen = config or TrainConfig.for_ratings(len(train))
        reports.append(evaluate_fold(index, train, data.subset(mask), Settings(), chosen, ranking))
    return reports


def described(config: TrainConfig) -> str:
    """The size-dependent fields of a config, as the CLI options (and the two without one)."""
    return (
        f"--batch-size {config.batch_size} --lr {config.lr:g} --epochs {config.epochs} "
        f"--wd {config.weight_decay:g}, validation share {config.validation_share:g}"
    )


def load_average() -> str:
    return "/".join(f"{figure:.1f}" for figure in os.getloadavg())


def warm_up(data: TrainingSet, config: TrainConfig) -> None:
    """One short fit before anything is timed: torch initialises its kernels on first use (about a
    second, once per process), which is no part of any fold's training."""
    sample = data.subset(np.arange(min(len(data), 5_000)))
    fit(sample, TrainConfig(**config.as_dict() | {"epochs": 1}), (0.0, 5.5))


def ml100k_cross_validation(work: Path, svdpp: bool) -> str:
    name, data = load("ml-100k", work)
    masks = list(k_fold_masks(len(data), 5, SEED))
    config = TrainConfig.for_ratings(int((~masks[0]).sum()))
    warm_up(data, config)
    loads = [load_average()]
    algorithms = ["SVD", "SVDpp"] if svdpp else ["SVD"]
    # fold by fold, ours then the peers', so that both see the same load on a shared machine
    reports, peers = [], {}
    for index, mask in enumerate(masks, start=1):
        reports += ours(data, [mask], config, ranking=False, first_fold=index)
        for peer, results in run_peers(data, [mask], algorithms, work).items():
            peers.setdefault(peer, []).extend(results)
    loads.append(load_average())
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
    title = f"### {name}, 5-fold cross-validation (seed {SEED})"
    note = f"dotrec: {described(config)}; load average before/after {' -> '.join(loads)}."
    return f"{title}\n\n{note}\n\n" + markdown_table(header, rows)


def ml1m_part1_holdout(work: Path, repeats: int) -> str:
    archive = shared_archive("ml-1m-part1")
    if archive is None:
        return "### ml-1m-part1: not present (../shared/data), skipped"
    data = TrainingSet.from_frame(read_ratings_set(archive).ratings)
    mask = holdout_mask(len(data), 0.1, SEED)
    config = TrainConfig.for_ratings(int((~mask).sum()))
    warm_up(data, config)
    loads = [load_average()]
    # in turn, so that dotrec and SVD share the machine's load; the ranking figures once
    runs, svd = [], []
    for repeat in range(repeats):
        (report,) = ours(data, [mask], None, ranking=repeat == 0)
        runs.append(report)
        svd += run_peers(data, [mask], ["SVD"], work).get("SVD", [])
    (fixed,) = ours(data, [mask], FIXED, ranking=False)
    peers = run_peers(data, [mask], ["SVD", "BaselineOnly"], work)
    svd += peers.get("SVD", [])
    loads.append(load_average())
    report = runs[0]
    ours_s = float(np.median([r.train_seconds for r in runs]))
    svd_s = float(np.median([r["fit_seconds"] for r in svd])) if svd else float("nan")
    rows = [
        [
            "dotrec (defaults for this size)",
            f"{report.rmse:.4f}",
            f"{report.mae:.4f}",
            f"{ours_s:.2f}",
            f"{ours_s / svd_s:.2f}",
        ],
        [
            "dotrec (the fixed defaults before: 10 epochs of 1,024)",
            f"{fixed.rmse:.4f}",
            f"{fixed.mae:.4f}",
            f"{fixed.train_seconds:.2f}",
            f"{fixed.train_seconds / svd_s:.2f}",
        ],
        [
            "bias only (dotrec's baseline)",
            f"{report.bias_only_rmse:.4f}",
            f"{report.bias_only_mae:.4f}",
            "",
            "",
        ],
        ["global mean", f"{report.global_mean_rmse:.4f}", "", "", ""],
    ]
    if svd:
        rows.append(["Surprise SVD", f"{svd[0]['rmse']:.4f}", "", f"{svd_s:.2f}", "1.00"])
    if "BaselineOnly" in peers:
        baseline = peers["BaselineOnly"][0]
        rows.append(
            [
                "Surprise BaselineOnly",
                f"{baseline['rmse']:.4f}",
                "",
                f"{baseline['fit_seconds']:.2f}",
                f"{baseline['fit_seconds'] / svd_s:.2f}",
            ]
        )
    accuracy = markdown_table(["model", "RMSE", "MAE", "train s (median)", "/ SVD s"], rows)
    timings = markdown_table(
        ["run", "dotrec RMSE", "dotrec s", "SVD s", "dotrec s / SVD s"],
        [
            [
                i,
                f"{run.rmse:.4f}",
                f"{run.train_seconds:.2f}",
                f"{peer['fit_seconds']:.2f}",
                f"{run.train_seconds / peer['fit_seconds']:.2f}",
            ]
            for i, (run, peer) in enumerate(zip(runs, svd, strict=False), start=1)
        ],
    )
    ranking = markdown_table(
        ["top-10 ranking", "precision@10", "recall@10", "NDCG@10"],
        [
            [
                "dotrec (rating + popularity prior)",
                f"{report.ranking['precision_at_10']:.4f}",
                f"{report.ranking['recall_at_10']:.4f}",
                f"{report.ranking['ndcg_at_10']:.4f}",
            ],
            [
                "popularity (training counts)",
                f"{report.popular_ranking['precision_at_10']:.4f}",
                f"{report.popular_ranking['recall_at_10']:.4f}",
                f"{report.popular_ranking['ndcg_at_10']:.4f}",
            ],
        ],
    )
    note = (
        f"dotrec: {described(config)} ({report.n_train:,} training ratings); {repeats} fits of "
        f"each in turn, medians; load average before/after {' -> '.join(loads)}."
    )
    return f"### ml-1m-part1 (real), seeded 90/10 split\n\n{note}\n\n{accuracy}\n\n{timings}\n\n{ranking}"


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


def ml1m_shaped_memory(work: Path) -> str:
    folder = write_synthetic(work / "synthetic-ml-1m", *PRESETS["ml-1m"], seed=SEED)
    config = TrainConfig.for_ratings(PRESETS["ml-1m"][2])
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
    parser.add_argument("--repeats", type=int, default=3, help="fits of dotrec and SVD on ml-1m-part1")
    parser.add_argument("--only", choices=["ml-100k", "ml-1m-part1", "synthetic"], help="one section")
    arguments = parser.parse_args()
    sections = {
        "ml-100k": lambda work: ml100k_cross_validation(work, arguments.svdpp),
        "ml-1m-part1": lambda work: ml1m_part1_holdout(work, arguments.repeats),
        "synthetic": ml1m_shaped_memory,
    }
    chosen = [arguments.only] if arguments.only else list(sections)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        texts = [f"Machine: {machine()}. dotrec class defaults: {TrainConfig().as_dict()}."]
        texts += [sections[name](work) for name in chosen]
    write_result("train.md", "\n\n".join(texts))


if __name__ == "__main__":
    main()
