"""Top-10 ranking against tuned peers, issue 14's protocol, every method in the same run.

    bash scripts/setup.sh && bash bench/setup_peers.sh    # once: dotrec's and the peers' envs
    python -m bench.bench_ranking                         # writes bench/results/ranking.{md,json}
    python -m bench.bench_ranking --data ml-100k --no-dotrec --methods ease,head   # a subset

Protocol: per user, a seeded random 75/25 split of their ratings (`per_user_split`); every
method ranks the full catalogue (the movies with a training rating), the user's training movies
excluded; precision@10, recall@10, NDCG@10 under both relevance rules (every held-out rating
relevant; only held-out ratings >= 4), catalogue coverage of all users' top-10 lists, mean
popularity rank of the listed movies (1 = most rated in training).

Tuning, the same for every tuned method: the training part is split again per user, 75/25
(seed 1); each configuration of the method's grid is fitted on the first part and scored on the
second; the best by the mean of both rules' NDCG@10 is refitted on the whole training part
(timed) and scored on the test part. Threads: 2 for everyone (torch, numpy's BLAS, implicit);
cornac's seeded BPR runs one thread.

Methods: popularity; EASE (Steck 2019, numpy, lambda tuned); implicit's ALS (factors,
regularization, alpha tuned) and cornac's BPR (factors, learning rate, regularization, epochs
tuned), both in bench/.venv-peers; the ranking head (app/ml/ranking.py, fitted alone,
tuned, and its one set of defaults); and dotrec as served: the training part imported into a
fresh SQLite database, `dotrec train` with its defaults, `dotrec serve`, one
`GET /recommendations/{user}?k=10` per test user (`served_dotrec_lists`; only the CLI and the
HTTP API are used, so it measures whatever the product does by default).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.data.movielens import read_ratings_set
from app.data.splits import per_user_mask as per_user_split
from app.ml.ranking_metrics import K, RankingReport, ranking_metrics
from app.ml.ranking_metrics import top_lists as top_k
from bench.common import REPO_ROOT, RESULTS_DIR, machine, markdown_table, shared_archive, write_result
from bench.prototypes.ranking_head import IALSConfig
from bench.prototypes.ranking_head import fit as fit_head

PEERS_PYTHON = REPO_ROOT / "bench" / ".venv-peers" / "bin" / "python"
PEERS_SCRIPT = REPO_ROOT / "bench" / "peers" / "ranking_peers.py"
TEST_SEED, VALIDATION_SEED = 0, 1
HELD_OUT = 0.25
THREADS = 2

#: (train users, train movies, train ratings, users to list) -> [(lists, fit seconds)] per config
ListMaker = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict]], list[tuple[np.ndarray, float]]
]


@dataclass(frozen=True)
class Ratings:
    users: np.ndarray  # int64 rows
    movies: np.ndarray  # int64 rows
    ratings: np.ndarray  # float32

    def subset(self, mask: np.ndarray) -> Ratings:
        return Ratings(self.users[mask], self.movies[mask], self.ratings[mask])


@dataclass(frozen=True)
class Split:
    """One data set coded to dense rows, its test split and the validation split of its training part."""

    name: str
    user_ids: np.ndarray
    movie_ids: np.ndarray
    train: Ratings
    test: Ratings
    tune_train: Ratings
    tune_test: Ratings

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_movies(self) -> int:
        return len(self.movie_ids)


def load_split(name: str) -> Split:
    archive = shared_archive(name)
    if archive is None:
        raise SystemExit(f"{name}: not in DOTREC_SHARED_DATA or ../shared/data")
    frame = read_ratings_set(archive).ratings
    user_ids, users = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
    movie_ids, movies = np.unique(frame["movie_id"].to_numpy(), return_inverse=True)
    everything = Ratings(
        users.astype(np.int64), movies.astype(np.int64), frame["rating"].to_numpy(np.float32)
    )
    test_mask = per_user_split(everything.users, HELD_OUT, TEST_SEED)
    train = everything.subset(~test_mask)
    tune_mask = per_user_split(train.users, HELD_OUT, VALIDATION_SEED)
    return Split(
        name,
        user_ids,
        movie_ids,
        train,
        everything.subset(test_mask),
        train.subset(~tune_mask),
        train.subset(tune_mask),
    )


# --- methods --------------------------------------------------------------------------------------


def popularity_lists(split: Split) -> ListMaker:
    def make(users, movies, ratings, listed, configs):
        counts = np.bincount(movies, minlength=split.n_movies).astype(np.float32)
        started = time.perf_counter()
        seconds = time.perf_counter() - started
        lists = top_k(
            lambda rows: np.broadcast_to(counts, (len(rows), split.n_movies)),
            users,
            movies,
            split.n_users,
            listed,
        )
        return [(lists, seconds) for _ in configs]

    return make


def ease_lists(split: Split) -> ListMaker:
    """EASE (Steck 2019): B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1, scores X_u B."""

    def make(users, movies, ratings, listed, configs):
        out = []
        for config in configs:
            started = time.perf_counter()
            matrix = np.zeros((split.n_users, split.n_movies), np.float32)
            matrix[users, movies] = 1.0
            gram = matrix.T @ matrix
            gram[np.diag_indices_from(gram)] += config["lambda"]
            inverse = np.linalg.inv(gram)
            weights = inverse / -np.diag(inverse)
            np.fill_diagonal(weights, 0.0)
            seconds = time.perf_counter() - started
            lists = top_k(lambda rows, x=matrix, b=weights: x[rows] @ b, users, movies, split.n_users, listed)
            out.append((lists, seconds))
        return out

    return make


def head_lists(split: Split) -> ListMaker:
    def make(users, movies, ratings, listed, configs):
        out = []
        for config in configs:
            head = fit_head(users, movies, ratings, split.n_users, split.n_movies, IALSConfig(**config))
            out.append((top_k(head.score, users, movies, split.n_users, listed), head.fit_seconds))
        return out

    return make


def peer_lists(split: Split, method: str) -> ListMaker:
    """Lists of implicit's ALS or cornac's BPR, fitted in the peers' own environment."""

    def make(users, movies, ratings, listed, configs):
        with tempfile.TemporaryDirectory() as folder:
            source, configs_path, out = (
                Path(folder) / name for name in ("in.npz", "configs.json", "out.npz")
            )
            np.savez(
                source,
                users=users,
                movies=movies,
                ratings=ratings,
                n_users=split.n_users,
                n_movies=split.n_movies,
                list_users=listed,
                k=K,
            )
            configs_path.write_text(json.dumps(configs))
            subprocess.run(
                [str(PEERS_PYTHON), str(PEERS_SCRIPT), method, str(source), str(configs_path), str(out)],
                check=True,
            )
            result = np.load(out)
            return [(result[f"lists_{i}"], float(result["seconds"][i])) for i in range(len(configs))]

    return make


# --- dotrec as served -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dotrec_command() -> list[str]:
    script = Path(sys.executable).parent / "dotrec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def _wait_until_serving(port: int, server: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"dotrec serve exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("dotrec serve did not answer /health in time")


def served_dotrec_lists(split: Split, train: Ratings, listed: np.ndarray) -> tuple[np.ndarray, float]:
    """Lists of `GET /recommendations` from a model trained by the default `dotrec train` on `train`.

    A fresh folder holds the SQLite database (DATABASE_URL), MODELS_DIR and DATA_DIR, and is the
    working directory (so no .env of the repository is read). Returns the lists and the wall
    seconds of `dotrec train` (the whole command: start, reading the database, training, saving).
    A listed movie the model does not know is a miss; a short list is padded with -1 (never relevant).
    """
    movie_row = {int(movie_id): row for row, movie_id in enumerate(split.movie_ids)}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        csv = work / "train.csv"
        np.savetxt(
            csv,
            np.column_stack([split.user_ids[train.users], split.movie_ids[train.movies], train.ratings]),
            fmt=["%d", "%d", "%g"],
            delimiter=",",
            header="user_id,movie_id,rating",
            comments="",
        )
        env = os.environ | {
            "DATABASE_URL": f"sqlite:///{work / 'dotrec.db'}",
            "MODELS_DIR": str(work / "models"),
            "DATA_DIR": str(work / "data"),
        }
        env.pop("RECOMMENDATIONS_TABLE", None)
        dotrec = _dotrec_command()

        def run(*arguments: str) -> None:
            done = subprocess.run([*dotrec, *arguments], cwd=work, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"dotrec {' '.join(arguments)} failed:\n{done.stdout}\n{done.stderr}")

        run("db", "upgrade")
        run("import", str(csv), "--quiet")
        started = time.perf_counter()
        run("train", "--quiet")
        train_seconds = time.perf_counter() - started
        port = _free_port()
        server = subprocess.Popen(
            [*dotrec, "serve", "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until_serving(port, server)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            lists = np.full((len(listed), K), -1, dtype=np.int64)
            for index, user in enumerate(split.user_ids[listed]):
                connection.request("GET", f"/recommendations/{int(user)}?k={K}")
                response = connection.getresponse()
                body = json.loads(response.read())
                if response.status != 200:
                    raise RuntimeError(f"GET /recommendations/{user}: {response.status} {body}")
                items = body["items"]
                if items and "score" in items[0]:
                    items = sorted(items, key=lambda item: -item["score"])
                rows = [movie_row.get(int(item["movie_id"]), -1) for item in items[:K]]
                lists[index, : len(rows)] = rows
        finally:
            server.terminate()
            server.wait(timeout=30)
    return lists, train_seconds


# --- tuning and reporting -------------------------------------------------------------------------


@dataclass
class MethodResult:
    name: str
    params: dict
    test: RankingReport
    fit_seconds: float
    fit_seconds_all: list[float]
    tuning: list[dict] = field(default_factory=list)


def _score(
    split: Split, lists: np.ndarray, listed: np.ndarray, train: Ratings, test: Ratings
) -> RankingReport:
    return ranking_metrics(listed, lists, test.users, test.movies, test.ratings, train.movies, split.n_movies)


def tune_and_test(split: Split, name: str, make: ListMaker, grid: Sequence[dict]) -> MethodResult:
    """Pick the grid's best configuration on the validation split, refit on train, score on test."""
    tuning = []
    if len(grid) > 1:
        listed = np.unique(split.tune_test.users)
        fitted = make(
            split.tune_train.users, split.tune_train.movies, split.tune_train.ratings, listed, list(grid)
        )
        for config, (lists, seconds) in zip(grid, fitted, strict=True):
            report = _score(split, lists, listed, split.tune_train, split.tune_test)
            tuning.append(
                {
                    "params": config,
                    "validation": report.as_dict(),
                    "ndcg_mean": report.ndcg_mean(),
                    "fit_seconds": seconds,
                }
            )
            print(
                f"  {name} {config}: validation NDCG@10 all {report.all.ndcg:.4f} "
                f">=4 {report.ge4.ndcg:.4f} ({seconds:.2f}s)",
                flush=True,
            )
        best = max(tuning, key=lambda row: row["ndcg_mean"])["params"]
    else:
        best = grid[0]
    listed = np.unique(split.test.users)
    lists, fit_seconds = make(split.train.users, split.train.movies, split.train.ratings, listed, [best])[0]
    report = _score(split, lists, listed, split.train, split.test)
    seconds = [fit_seconds]
    print(
        f"  {name} best {best}: test NDCG@10 all {report.all.ndcg:.4f} >=4 {report.ge4.ndcg:.4f}; "
        f"fit {seconds}",
        flush=True,
    )
    return MethodResult(name, best, report, statistics.median(seconds), seconds, tuning)


def interleaved_fit_times(
    split: Split,
    results: list[MethodResult],
    makers: dict[str, ListMaker],
    labels: dict[str, str],
    repeats: int,
) -> None:
    """Refit implicit's ALS and the ranking head in turn, `repeats` times each, on the training part
    with their tuned parameters, and keep each one's median fit time: on a machine shared with
    other work, alternating the two is what keeps their ratio fair."""
    timed = [m for m in ("als", "head", "head_defaults") if any(r.name == labels[m] for r in results)]
    if "als" not in timed or repeats < 1:
        return
    by_name = {r.name: r for r in results}
    seconds: dict[str, list[float]] = {m: [] for m in timed}
    for _ in range(repeats):
        for method in timed:
            result = by_name[labels[method]]
            listed = np.unique(split.test.users)[:1]
            train = split.train
            refit = makers[method](train.users, train.movies, train.ratings, listed, [result.params])
            fit_seconds = refit[0][1]
            seconds[method].append(fit_seconds)
    for method in timed:
        result = by_name[labels[method]]
        result.fit_seconds_all = seconds[method]
        result.fit_seconds = statistics.median(seconds[method])
    print(f"  interleaved fit seconds: {seconds}", flush=True)


def grids(name: str) -> dict[str, list[dict]]:
    """Each method's tuning grid on data set `name` (ml-100k broader; larger sets narrower)."""
    small = name == "ml-100k"
    ease = [
        {"lambda": value}
        for value in ((50, 100, 200, 400, 800, 1600) if small else (100, 200, 400, 800, 1600, 3200))
    ]
    als = [
        {"factors": f, "regularization": r, "alpha": a, "iterations": 15, "threads": THREADS, "seed": 0}
        for f in (32, 64, 128)
        for r in (10.0, 30.0, 100.0, 300.0)
        for a in (2.0, 4.0, 8.0, 16.0)
    ]
    bpr = [
        {"k": k, "max_iter": it, "learning_rate": lr, "lambda_reg": reg, "seed": 0}
        for k in (64, 128)
        for it in ((300, 600) if small else (300,))
        for lr in (0.01, 0.03)
        for reg in (0.01, 0.03, 0.1)
    ]
    head = [
        IALSConfig(n_factors=d, reg_scale=scale, rating_weight=w, threads=THREADS).as_dict()
        for d in (32, 64)
        for scale in (8.0, 10.0, 12.0, 14.0, 17.0)
        for w in (0.0, 0.25, 0.5)
    ]
    return {
        "ease": ease,
        "als": als,
        "bpr": bpr,
        "head": head,
        "head_defaults": [IALSConfig().as_dict()],
        "popularity": [{}],
    }


def run_data_set(name: str, methods: Sequence[str], repeats: int) -> dict:
    split = load_split(name)
    print(
        f"{name}: {split.n_users} users x {split.n_movies} movies, "
        f"train {len(split.train.users)}, test {len(split.test.users)}",
        flush=True,
    )
    grid = grids(name)
    makers: dict[str, ListMaker] = {
        "popularity": popularity_lists(split),
        "ease": ease_lists(split),
        "als": peer_lists(split, "als"),
        "bpr": peer_lists(split, "bpr"),
        "head": head_lists(split),
        "head_defaults": head_lists(split),
    }
    labels = {
        "popularity": "popularity",
        "ease": "EASE (numpy)",
        "als": "implicit ALS",
        "bpr": "cornac BPR",
        "head": "ranking head alone (app.ml.ranking, tuned)",
        "head_defaults": "ranking head alone (app.ml.ranking, defaults)",
    }
    results: list[MethodResult] = []
    for method in methods:
        if method == "dotrec":
            listed = np.unique(split.test.users)
            lists, seconds = served_dotrec_lists(split, split.train, listed)
            report = _score(split, lists, listed, split.train, split.test)
            print(
                f"  dotrec served: test NDCG@10 all {report.all.ndcg:.4f} >=4 {report.ge4.ndcg:.4f}",
                flush=True,
            )
            results.append(
                MethodResult(
                    "dotrec as served (GET /recommendations)",
                    {"dotrec train": "defaults"},
                    report,
                    seconds,
                    [seconds],
                )
            )
            continue
        if method in ("als", "bpr") and not PEERS_PYTHON.exists():
            print(f"  no bench/.venv-peers: run bench/setup_peers.sh for {labels[method]}")
            continue
        results.append(tune_and_test(split, labels[method], makers[method], grid[method]))
    interleaved_fit_times(split, results, makers, labels, repeats)
    return {
        "data": name,
        "users": split.n_users,
        "movies": split.n_movies,
        "train_ratings": len(split.train.users),
        "test_ratings": len(split.test.users),
        "methods": [
            {
                "name": r.name,
                "params": r.params,
                "test": r.test.as_dict(),
                "fit_seconds": r.fit_seconds,
                "fit_seconds_runs": r.fit_seconds_all,
                "tuning": r.tuning,
            }
            for r in results
        ],
    }


def markdown(result: dict) -> str:
    methods = result["methods"]
    als = next((m for m in methods if m["name"] == "implicit ALS"), None)
    header = [
        "method",
        "P@10",
        "R@10",
        "NDCG@10",
        "P@10 (>=4)",
        "R@10 (>=4)",
        "NDCG@10 (>=4)",
        "coverage",
        "mean pop. rank",
        "fit s",
        "fit / ALS",
        "params",
    ]
    rows = []
    for m in methods:
        test = m["test"]
        ratio = (
            f"{m['fit_seconds'] / als['fit_seconds']:.2f}"
            if als and m["name"].startswith("ranking head")
            else ""
        )
        params = {
            k: v
            for k, v in m["params"].items()
            if k not in ("threads", "seed", "solver", "rating_pivot", "min_weight", "init_std")
        }
        rows.append(
            [
                m["name"],
                f"{test['all']['precision']:.4f}",
                f"{test['all']['recall']:.4f}",
                f"{test['all']['ndcg']:.4f}",
                f"{test['ge4']['precision']:.4f}",
                f"{test['ge4']['recall']:.4f}",
                f"{test['ge4']['ndcg']:.4f}",
                f"{test['coverage']:.3f}",
                f"{test['mean_popularity_rank']:.0f}",
                f"{m['fit_seconds']:.2f}",
                ratio,
                "`" + json.dumps(params) + "`",
            ]
        )
    title = (
        f"### {result['data']}: {result['users']:,} users x {result['movies']:,} movies, "
        f"{result['train_ratings']:,} training / {result['test_ratings']:,} held-out ratings"
    )
    return f"{title}\n\n" + markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", default=["ml-100k", "ml-1m-part1"])
    parser.add_argument(
        "--methods",
        default="popularity,ease,als,bpr,head,head_defaults,dotrec",
        help="comma-separated subset",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved timed refits of ALS and the head (median)"
    )
    parser.add_argument("--out", default="ranking", help="bench/results/<out>.md and .json")
    arguments = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    results = [run_data_set(name, arguments.methods.split(","), arguments.repeats) for name in arguments.data]
    (RESULTS_DIR / f"{arguments.out}.json").parent.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{arguments.out}.json").write_text(
        json.dumps({"machine": machine(), "results": results}, indent=1)
    )
    text = "\n\n".join(
        [
            f"Machine: {machine()}; {THREADS} threads for torch, numpy and implicit "
            "(cornac's seeded BPR: 1). "
            "Tuned on a per-user 75/25 validation split of the training part by mean NDCG@10 of both rules; "
            "fit s: the final fit on the training part (ALS and the head: the median of interleaved refits).",
            *(markdown(result) for result in results),
        ]
    )
    write_result(f"{arguments.out}.md", text)


if __name__ == "__main__":
    main()
