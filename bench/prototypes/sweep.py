"""Sweep the ranking head's hyper-parameters on the validation split of bench_ranking's protocol.

    python -m bench.prototypes.sweep --data ml-100k --grid '{"dim": [64, 128], "reg": [0.01, 0.02]}'
    python -m bench.prototypes.sweep --data ml-1m-part1 --base '{"dim": 256}' \\
        --grid '{"epochs": [4, 8]}' --test

Each combination of --grid (over --base, over IALSConfig's defaults) is fitted on the tuning
part of the training split and scored on its validation part (--test: fitted on the whole
training part and scored on the test part instead). One line per combination; --out appends
JSON lines.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.ml.ranking_metrics import ranking_metrics
from app.ml.ranking_metrics import top_lists as top_k
from bench.bench_ranking import load_split
from bench.prototypes.ranking_head import FittedHead, IALSConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--base", default="{}", help="JSON: IALSConfig fields fixed for the sweep")
    parser.add_argument("--grid", default="{}", help="JSON: field -> list of values")
    parser.add_argument("--test", action="store_true", help="fit on train, score on test (not validation)")
    parser.add_argument("--prior", type=float, nargs="*", default=[0.0], help="popularity prior weights")
    parser.add_argument("--out", type=Path, help="append one JSON line per result")
    arguments = parser.parse_args()
    split = load_split(arguments.data)
    train, held = (split.train, split.test) if arguments.test else (split.tune_train, split.tune_test)
    base = replace(IALSConfig(), **json.loads(arguments.base))
    grid = json.loads(arguments.grid)
    listed = np.unique(held.users)
    log_counts = np.log1p(np.bincount(train.movies, minlength=split.n_movies)).astype(np.float32)
    for values in itertools.product(*grid.values()):
        changes = dict(zip(grid, values, strict=True))
        config = replace(base, **changes)
        head = fit(train.users, train.movies, train.ratings, split.n_users, split.n_movies, config)
        for prior in arguments.prior:

            def score(rows: np.ndarray, weight: float = prior, fitted: FittedHead = head) -> np.ndarray:
                scores = fitted.score(rows)
                return scores + weight * log_counts if weight else scores

            lists = top_k(score, train.users, train.movies, split.n_users, listed)
            report = ranking_metrics(
                listed, lists, held.users, held.movies, held.ratings, train.movies, split.n_movies
            )
            label = json.dumps(changes | ({"prior": prior} if prior else {}))
            print(
                f"{arguments.data} {'test' if arguments.test else 'val'} {label:60s} "
                f"NDCG all {report.all.ndcg:.4f} >=4 {report.ge4.ndcg:.4f} mean {report.ndcg_mean():.4f} "
                f"P {report.all.precision:.4f} cov {report.coverage:.3f} "
                f"pop {report.mean_popularity_rank:.0f} "
                f"fit {head.fit_seconds:.2f}s",
                flush=True,
            )
            if arguments.out:
                with arguments.out.open("a") as out:
                    row = {"data": arguments.data, "test": arguments.test, "config": config.as_dict()}
                    row |= {"prior": prior, "report": report.as_dict(), "fit_seconds": head.fit_seconds}
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
