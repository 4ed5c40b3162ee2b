"""Fit a ranking peer for each of several configurations; write each one's top-k lists.

Runs under the peers' own environment (bench/setup_peers.sh), never dotrec's:

    bench/.venv-peers/bin/python bench/peers/ranking_peers.py als|bpr IN.npz CONFIGS.json OUT.npz

IN.npz holds `users`, `movies`, `ratings` (the training ratings, dense 0-based rows), `n_users`,
`n_movies`, `list_users` (whose lists to write) and `k`; OUT.npz gets `lists_<i>` (int
(len(list_users), k) movie rows, best first, training movies excluded) and `seconds` (each
configuration's fit time, the fit call alone). Threads: implicit's `num_threads` from
CONFIGS.json (its BLAS kept to one thread, as implicit asks); cornac's BPR with a seed runs one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit runs its own threads over one-thread BLAS

import numpy as np
import scipy.sparse as sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from app.ml.ranking_metrics import top_lists as top_k


def implicit_als(train: dict, config: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """implicit's CPU ALS on the binary who-rated-what matrix (confidence = alpha on ratings)."""
    from implicit.cpu.als import AlternatingLeastSquares

    matrix = sparse.csr_matrix(
        (np.ones(len(train["users"]), np.float32), (train["users"], train["movies"])),
        shape=(int(train["n_users"]), int(train["n_movies"])),
    )
    model = AlternatingLeastSquares(
        factors=config["factors"],
        regularization=config["regularization"],
        alpha=config["alpha"],
        iterations=config.get("iterations", 15),
        num_threads=config.get("threads", 2),
        random_state=config.get("seed", 0),
    )
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    return np.asarray(model.user_factors), np.asarray(model.item_factors), seconds


def cornac_bpr(train: dict, config: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """cornac's BPR (with item biases, folded into the factors as a constant user column)."""
    from cornac.data import Dataset
    from cornac.models import BPR

    triples = list(
        zip(train["users"].tolist(), train["movies"].tolist(), [1.0] * len(train["users"]), strict=True)
    )
    data = Dataset.from_uir(triples, seed=config.get("seed", 0))
    model = BPR(
        k=config["k"],
        max_iter=config["max_iter"],
        learning_rate=config["learning_rate"],
        lambda_reg=config["lambda_reg"],
        seed=config.get("seed", 0),
    )
    started = time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - started
    n_users, n_movies, dim = int(train["n_users"]), int(train["n_movies"]), config["k"]
    users = np.zeros((n_users, dim + 1), np.float32)
    movies = np.zeros((n_movies, dim + 1), np.float32)
    user_index = np.array(list(data.uid_map.items()), dtype=np.int64)
    movie_index = np.array(list(data.iid_map.items()), dtype=np.int64)
    users[user_index[:, 0], :dim] = model.u_factors[user_index[:, 1]]
    users[:, dim] = 1.0
    movies[movie_index[:, 0], :dim] = model.i_factors[movie_index[:, 1]]
    movies[movie_index[:, 0], dim] = model.i_biases[movie_index[:, 1]]
    return users, movies, seconds


PEERS = {"als": implicit_als, "bpr": cornac_bpr}


def main() -> None:
    method, source, configs_path, out = sys.argv[1:5]
    train = dict(np.load(source))
    configs = json.loads(Path(configs_path).read_text())
    results: dict[str, np.ndarray] = {}
    seconds = []
    for index, config in enumerate(configs):
        users, movies, fit_seconds = PEERS[method](train, config)
        results[f"lists_{index}"] = top_k(
            lambda rows, u=users, m=movies: u[rows] @ m.T,
            train["users"],
            train["movies"],
            int(train["n_users"]),
            train["list_users"],
            int(train["k"]),
        )
        seconds.append(fit_seconds)
    np.savez(out, seconds=np.array(seconds), **results)


if __name__ == "__main__":
    main()
