"""Three checks of the ranking head (the product's, app/ml/ranking.py), beside bench_ranking's accuracy table.

    python -m bench.prototypes.ranking_checks                 # both data sets, all checks
    python -m bench.prototypes.ranking_checks --data ml-100k --checks fold_in

- fold_in: can a user who rated after training be served by a closed-form fold-in?
  Take N seeded users with >= 20 ratings; for each, 10 seeded ratings are "known", the rest
  held out. Model A trains on everyone else; each chosen user is folded in from their 10 ratings
  (movies fixed, the exact per-row solve). Model B retrains with the same config on everyone
  else plus the chosen users' 10 ratings. Both rank the full catalogue less the 10 known movies;
  NDCG@10 on the held-out ratings (both relevance rules), averaged over the chosen users.
  Target: A >= 0.9 x B.
- similar: which head gives better "similar movies" lists? Train on the protocol's training part;
  each movie's 10 nearest by cosine of its embedding row. Score: co-rating precision@10 on the
  held-out part: for a movie m and each neighbour n, the share of m's held-out raters who also
  rated n in held-out data, averaged over the 10 neighbours and over movies (weighted by m's
  held-out raters; movies with >= 5 of them). The rating head is today's model (`dotrec train` on
  the training part, `movie_emb` of weights.safetensors); the ranking head's movie factors;
  calibration rows: the 10 most popular movies for everyone, and item-kNN (cosine of the
  training who-rated-what columns).
- prior: does `score + w * log(1 + count)` (today's popularity prior) help the ranking head?
  Validation and test NDCG@10 for a few w.

Writes bench/results/ranking_checks.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from app.ml.ranking_metrics import ranking_metrics
from app.ml.ranking_metrics import top_lists as top_k
from bench.bench_ranking import Ratings, Split, load_split
from bench.common import RESULTS_DIR, machine, markdown_table, write_result
from bench.prototypes.ranking_head import IALSConfig, fit, fold_in

#: what bench_ranking's tuning picked per data set (bench/prototypes/NOTES.md); `defaults` is IALSConfig()
TUNED = {
    "ml-100k": IALSConfig(),
    "ml-1m-part1": IALSConfig(n_factors=64, reg_scale=14.0),
}


def config_for(name: str, which: str) -> IALSConfig:
    return TUNED[name] if which == "tuned" else IALSConfig()


# --- fold-in --------------------------------------------------------------------------------------


def fold_in_check(
    split: Split, config: IALSConfig, n_users: int = 200, known: int = 10, seed: int = 0
) -> dict:
    everything = Ratings(
        np.concatenate([split.train.users, split.test.users]),
        np.concatenate([split.train.movies, split.test.movies]),
        np.concatenate([split.train.ratings, split.test.ratings]),
    )
    rng = np.random.default_rng(seed)
    counts = np.bincount(everything.users, minlength=split.n_users)
    chosen = np.sort(rng.choice(np.flatnonzero(counts >= 20), size=n_users, replace=False))
    is_chosen = np.isin(everything.users, chosen)
    keys = rng.random(len(everything.users))
    rank = np.empty(len(keys), dtype=np.int64)
    order = np.lexsort((keys, everything.users))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(keys)) - np.repeat(starts, counts)
    is_known = is_chosen & (rank < known)
    others = everything.subset(~is_chosen)
    known_part = everything.subset(is_known)
    held = everything.subset(is_chosen & ~is_known)

    model_a = fit(others.users, others.movies, others.ratings, split.n_users, split.n_movies, config)
    folded = np.zeros_like(model_a.user_factors)
    for user in chosen:
        mine = known_part.users == user
        folded[user] = fold_in(model_a, known_part.movies[mine], known_part.ratings[mine])
    retrained_on = Ratings(
        np.concatenate([others.users, known_part.users]),
        np.concatenate([others.movies, known_part.movies]),
        np.concatenate([others.ratings, known_part.ratings]),
    )
    model_b = fit(
        retrained_on.users, retrained_on.movies, retrained_on.ratings, split.n_users, split.n_movies, config
    )
    catalogue_movies = np.concatenate([others.movies, known_part.movies])  # what either model knows

    def evaluate(factors: np.ndarray, movie_factors: np.ndarray) -> dict:
        lists = top_k(
            lambda rows: factors[rows] @ movie_factors.T,
            known_part.users,
            known_part.movies,
            split.n_users,
            chosen,
        )
        return ranking_metrics(
            chosen, lists, held.users, held.movies, held.ratings, catalogue_movies, split.n_movies
        ).as_dict()

    counts_known = np.bincount(catalogue_movies, minlength=split.n_movies).astype(np.float32)
    popular = top_k(
        lambda rows: np.broadcast_to(counts_known, (len(rows), split.n_movies)),
        known_part.users,
        known_part.movies,
        split.n_users,
        chosen,
    )
    fold = evaluate(folded, model_a.movie_factors)
    retrained = evaluate(model_b.user_factors, model_b.movie_factors)
    lists_overlap = _list_overlap(
        folded, model_a.movie_factors, model_b.user_factors, model_b.movie_factors, chosen, known_part, split
    )
    return {
        "users": int(n_users),
        "known_ratings": known,
        "held_out_ratings": len(held.users),
        "fold_in": fold,
        "retrained": retrained,
        "popularity": ranking_metrics(
            chosen, popular, held.users, held.movies, held.ratings, catalogue_movies, split.n_movies
        ).as_dict(),
        "ratio_all": fold["all"]["ndcg"] / retrained["all"]["ndcg"],
        "ratio_ge4": fold["ge4"]["ndcg"] / retrained["ge4"]["ndcg"],
        "top10_overlap": lists_overlap,
        "config": config.as_dict(),
    }


def _list_overlap(
    users_a: np.ndarray,
    movies_a: np.ndarray,
    users_b: np.ndarray,
    movies_b: np.ndarray,
    chosen: np.ndarray,
    known: Ratings,
    split: Split,
) -> float:
    """Mean share of a chosen user's fold-in top-10 that is also in their retrained top-10."""
    lists = [
        top_k(
            lambda rows, u=u, m=m: u[rows] @ m.T,
            known.users,
            known.movies,
            split.n_users,
            chosen,
        )
        for u, m in ((users_a, movies_a), (users_b, movies_b))
    ]
    return float(np.mean([len(np.intersect1d(a, b)) / a.shape[0] for a, b in zip(*lists, strict=True)]))


# --- similar movies -------------------------------------------------------------------------------


def rating_head_movie_embeddings(split: Split) -> np.ndarray:
    """float32 (n_movies, k) `movie_emb` of today's model (default `dotrec train` on the training
    part), in this split's movie rows (zeros for movies the model does not know)."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        csv = work / "train.csv"
        train = split.train
        np.savetxt(
            csv,
            np.column_stack([split.user_ids[train.users], split.movie_ids[train.movies], train.ratings]),
            fmt=["%d", "%d", "%g"],
            delimiter=",",
            header="user_id,movie_id,rating",
            comments="",
        )
        env = os.environ | {"MODELS_DIR": str(work / "models"), "DATA_DIR": str(work / "data")}
        dotrec = Path(sys.executable).parent / "dotrec"
        subprocess.run(
            [str(dotrec), "train", "--data", str(csv), "--quiet"],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
        )
        # one version folder (a "current" pointer may show it twice)
        (meta_path,) = {path.resolve() for path in (work / "models").glob("*/meta.json")}
        from safetensors.numpy import load_file

        meta = json.loads(meta_path.read_text())
        weights = load_file(meta_path.parent / "weights.safetensors")["movie_emb"]
    rows = np.searchsorted(split.movie_ids, np.asarray(meta["movie_ids"]))
    out = np.zeros((split.n_movies, weights.shape[1]), np.float32)
    out[rows] = weights
    return out


def co_rating_precision(
    neighbours: np.ndarray, movies: np.ndarray, held: Ratings, n_users: int, n_movies: int
) -> float:
    """Mean over `movies` (weighted by their held-out raters) of the share of their held-out
    raters who also rated each neighbour in held-out data, averaged over the neighbours."""
    matrix = np.zeros((n_users, n_movies), np.float32)
    matrix[held.users, held.movies] = 1.0
    raters = matrix.sum(0)
    total = weight = 0.0
    for movie, near in zip(movies, neighbours, strict=True):
        who = matrix[:, movie] > 0
        share = matrix[who][:, near].sum(0) / raters[movie]
        total += share.mean() * raters[movie]
        weight += raters[movie]
    return float(total / weight)


def cosine_neighbours(
    vectors: np.ndarray, movies: np.ndarray, catalogue: np.ndarray, k: int = 10
) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    similarity = unit[movies] @ unit.T
    similarity[:, ~catalogue] = -np.inf
    similarity[np.arange(len(movies)), movies] = -np.inf
    best = np.argpartition(-similarity, k, axis=1)[:, :k]
    return best


def similar_check(split: Split, config: IALSConfig) -> dict:
    train, held = split.train, split.test
    catalogue = np.bincount(train.movies, minlength=split.n_movies) > 0
    held_raters = np.bincount(held.movies, minlength=split.n_movies)
    movies = np.flatnonzero((held_raters >= 5) & catalogue)
    head = fit(train.users, train.movies, train.ratings, split.n_users, split.n_movies, config)
    matrix = np.zeros((split.n_users, split.n_movies), np.float32)
    matrix[train.users, train.movies] = 1.0
    counts = np.bincount(train.movies, minlength=split.n_movies)
    popular = np.argsort(-counts, kind="stable")[:11]
    popular_lists = np.array([[n for n in popular if n != m][:10] for m in movies])
    candidates = {
        "rating head (today's movie_emb)": rating_head_movie_embeddings(split),
        "ranking head (iALS movie factors)": head.movie_factors,
        "item-kNN (cosine of training columns)": matrix.T.copy(),
    }
    ranks = np.empty(split.n_movies, np.int64)
    ranks[np.argsort(-counts, kind="stable")] = np.arange(1, split.n_movies + 1)
    rows = {}
    for name, vectors in candidates.items():
        near = cosine_neighbours(vectors, movies, catalogue)
        rows[name] = {
            "co_rating_precision": co_rating_precision(near, movies, held, split.n_users, split.n_movies),
            "mean_popularity_rank": float(ranks[near].mean()),
        }
    rows["most popular (same list for every movie)"] = {
        "co_rating_precision": co_rating_precision(
            popular_lists, movies, held, split.n_users, split.n_movies
        ),
        "mean_popularity_rank": float(ranks[popular_lists].mean()),
    }
    return {"movies": len(movies), "heads": rows, "config": config.as_dict()}


# --- popularity prior -----------------------------------------------------------------------------


def prior_check(
    split: Split, config: IALSConfig, weights: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5)
) -> dict:
    out = {}
    for part, train, held in (
        ("validation", split.tune_train, split.tune_test),
        ("test", split.train, split.test),
    ):
        head = fit(train.users, train.movies, train.ratings, split.n_users, split.n_movies, config)
        log_counts = np.log1p(np.bincount(train.movies, minlength=split.n_movies)).astype(np.float32)
        listed = np.unique(held.users)
        rows = {}
        for weight in weights:
            lists = top_k(
                lambda r, w=weight, h=head, c=log_counts: h.score(r) + w * c,
                train.users,
                train.movies,
                split.n_users,
                listed,
            )
            report = ranking_metrics(
                listed, lists, held.users, held.movies, held.ratings, train.movies, split.n_movies
            )
            rows[str(weight)] = report.as_dict()
        out[part] = rows
    return out


PARTS = ("validation", "test")


# --- report ---------------------------------------------------------------------------------------


def markdown(name: str, results: dict) -> str:
    parts = [f"## {name}"]
    if "fold_in" in results:
        f = results["fold_in"]
        parts.append(
            f"### Fold-in ({f['users']} users with >= 20 ratings, {f['known_ratings']} known each, "
            f"{f['held_out_ratings']:,} held out)\n\n"
            + markdown_table(
                ["model", "NDCG@10", "P@10", "NDCG@10 (>=4)", "P@10 (>=4)"],
                [
                    [
                        label,
                        f"{r['all']['ndcg']:.4f}",
                        f"{r['all']['precision']:.4f}",
                        f"{r['ge4']['ndcg']:.4f}",
                        f"{r['ge4']['precision']:.4f}",
                    ]
                    for label, r in (
                        ("fold-in (model without them, closed form from 10 ratings)", f["fold_in"]),
                        ("retrained with their 10 ratings", f["retrained"]),
                        ("popularity", f["popularity"]),
                    )
                ],
            )
            + f"\n\nfold-in / retrained NDCG@10: {f['ratio_all']:.3f} (all), {f['ratio_ge4']:.3f} (>=4); "
            f"mean overlap of the two top-10 lists: {f['top10_overlap']:.2f}"
        )
    if "similar" in results:
        s = results["similar"]
        parts.append(
            f"### Similar movies ({s['movies']} movies with >= 5 held-out raters)\n\n"
            + markdown_table(
                ["neighbours by", "co-rating precision@10", "mean popularity rank"],
                [
                    [k, f"{v['co_rating_precision']:.4f}", f"{v['mean_popularity_rank']:.0f}"]
                    for k, v in s["heads"].items()
                ],
            )
        )
    if "prior" in results:
        p = results["prior"]
        parts.append(
            "### Popularity prior on the ranking head (score + w log(1 + count))\n\n"
            + markdown_table(
                ["w", "validation NDCG@10", "validation NDCG@10 (>=4)", "test NDCG@10", "test NDCG@10 (>=4)"],
                [
                    [w] + [f"{p[part][w][rule]['ndcg']:.4f}" for part in PARTS for rule in ("all", "ge4")]
                    for w in p["test"]
                ],
            )
        )  # fmt: skip
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", default=["ml-100k", "ml-1m-part1"])
    parser.add_argument("--checks", default="fold_in,similar,prior")
    parser.add_argument("--config", choices=("tuned", "defaults"), default="defaults")
    arguments = parser.parse_args()
    everything = {}
    for name in arguments.data:
        split = load_split(name)
        config = config_for(name, arguments.config)
        results: dict = {}
        for check in arguments.checks.split(","):
            print(f"{name}: {check}", flush=True)
            results[check] = {"fold_in": fold_in_check, "similar": similar_check, "prior": prior_check}[
                check
            ](split, config)
        everything[name] = results
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "ranking_checks.json").write_text(
        json.dumps({"machine": machine(), "results": everything}, indent=1, default=float)
    )
    write_result(
        "ranking_checks.md",
        f"Machine: {machine()}; ranking head config: {arguments.config}.\n\n"
        + "\n\n".join(markdown(name, results) for name, results in everything.items()),
    )


if __name__ == "__main__":
    main()
