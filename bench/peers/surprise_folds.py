"""Run scikit-surprise on the exact folds a dotrec benchmark used; print JSON, one line.

Runs under the peers' own environment (bench/setup_peers.sh), never dotrec's:

    bench/.venv-peers/bin/python bench/peers/surprise_folds.py FOLDS.npz SVD [SVDpp BaselineOnly]

FOLDS.npz holds `users`, `movies`, `ratings` and `test_masks` (folds x n booleans).
"""

import json
import sys
import time

import numpy as np
import pandas as pd
from surprise import SVD, BaselineOnly, Dataset, Reader, SVDpp, accuracy

ALGORITHMS = {"SVD": SVD, "SVDpp": SVDpp, "BaselineOnly": BaselineOnly}


def main() -> None:
    folds = np.load(sys.argv[1])
    frame = pd.DataFrame({"user": folds["users"], "item": folds["movies"], "rating": folds["ratings"]})
    reader = Reader(rating_scale=(float(frame.rating.min()), float(frame.rating.max())))
    results = {}
    for name in sys.argv[2:]:
        rows = []
        for index, test_mask in enumerate(folds["test_masks"]):
            train = Dataset.load_from_df(frame[~test_mask], reader).build_full_trainset()
            test = list(frame[test_mask].itertuples(index=False, name=None))
            algorithm = (
                ALGORITHMS[name](random_state=index)
                if name != "BaselineOnly"
                else BaselineOnly(verbose=False)
            )
            started = time.perf_counter()
            algorithm.fit(train)
            seconds = time.perf_counter() - started
            rmse = accuracy.rmse(algorithm.test(test), verbose=False)
            rows.append({"fold": index + 1, "rmse": rmse, "fit_seconds": seconds})
        results[name] = rows
    print(json.dumps(results))


if __name__ == "__main__":
    main()
