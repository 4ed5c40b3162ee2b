"""Why row-wise batches win: time and memory of one training epoch scored row-wise
`(U[u] * M[m]).sum(-1)` against the spreadsheet way (the full `U @ M.T`, then the batch's
cells), as users x movies grows; and an embedding lookup against a one-hot matrix product.

Each measurement runs in a fresh process so its peak memory is its own.

    python -m bench.bench_math            # writes bench/results/math.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.data.movielens import read_ratings_set
from app.data.synth import write_synthetic
from app.data.training_set import TrainingSet
from app.ml.model import DotProductBias, frequency_weights
from app.ml.train import Objective
from bench.common import machine, markdown_table, peak_rss_mib, shared_archive, write_result

BATCH = 1024
FACTORS = 50
#: dense steps measured before extrapolating to a whole epoch (a full epoch takes minutes)
DENSE_STEPS = 8
#: a dense step holds ~6 float32 users x movies matrices (scores, sigmoid, grads); past this, skip
DENSE_LIMIT_BYTES = 12 << 30


def epoch_cost(args: tuple[int, int, np.ndarray, np.ndarray, np.ndarray, str]) -> tuple[float, float]:
    """(seconds per epoch, peak RSS MiB) of training `mode` on the given ratings, in this process."""
    n_users, n_movies, users, movies, ratings, mode = args
    torch.manual_seed(0)
    # each at its best: row-wise steps are too small to share out, dense ones are big matmuls
    torch.set_num_threads(1 if mode == "rowwise" else 2)
    model = DotProductBias(n_users, n_movies, FACTORS, (0.0, 5.5))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, fused=True)
    users, movies, ratings = (torch.from_numpy(a) for a in (users, movies, ratings))
    objective = Objective(
        model, 0.1, frequency_weights(users, n_users), frequency_weights(movies, n_movies), mode
    )
    batches = torch.randperm(len(ratings)).split(BATCH)
    measured = batches[:DENSE_STEPS] if mode == "dense" else batches
    started = time.perf_counter()
    for batch in measured:
        loss = objective(users[batch], movies[batch], ratings[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = (time.perf_counter() - started) * len(batches) / len(measured)
    return seconds, peak_rss_mib()


def in_fresh_process(function, args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, (args,))


def data_sets(work: Path, sizes: list[tuple[int, int, int]]) -> list[tuple[str, TrainingSet]]:
    found = []
    for name in ("ml-100k", "ml-1m-part1"):
        archive = shared_archive(name)
        if archive is not None:
            found.append((f"{name} (real)", TrainingSet.from_frame(read_ratings_set(archive).ratings)))
    for n_users, n_movies, n_ratings in sizes:
        folder = write_synthetic(work / f"{n_users}x{n_movies}", n_users, n_movies, n_ratings, seed=0)
        ratings = read_ratings_set(folder).ratings
        found.append((f"synthetic {n_users:,} x {n_movies:,}", TrainingSet.from_frame(ratings)))
    return found


def rowwise_vs_dense(sizes: list[tuple[int, int, int]]) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, data in data_sets(Path(work), sizes):
            cells = data.n_users * data.n_movies
            arrays = (data.n_users, data.n_movies, data.user_rows, data.movie_rows, data.ratings)
            row_seconds, row_mib = in_fresh_process(epoch_cost, (*arrays, "rowwise"))
            if cells * 4 * 6 > DENSE_LIMIT_BYTES:
                dense = ("does not fit", f"needs ~{cells * 4 * 6 / 2**30:,.0f} GiB")
            else:
                dense_seconds, dense_mib = in_fresh_process(epoch_cost, (*arrays, "dense"))
                dense = (f"{dense_seconds:,.1f}", f"{dense_mib:,.0f}")
            rows.append(
                (
                    name,
                    f"{data.n_users:,} x {data.n_movies:,}",
                    f"{len(data):,}",
                    f"{row_seconds:,.2f}",
                    f"{row_mib:,.0f}",
                    *dense,
                )
            )
            print(rows[-1], flush=True)
    header = [
        "data",
        "users x movies",
        "ratings",
        "row-wise s/epoch",
        "row-wise peak MiB",
        "dense s/epoch",
        "dense peak MiB",
    ]
    return markdown_table(header, rows)


def lookup_cost(args: tuple[str, int, int]) -> tuple[float, float, float]:
    """(forward ms, backward ms, peak RSS MiB) of one batch through an embedding or a one-hot product."""
    kind, n_rows, repeats = args
    torch.manual_seed(0)
    torch.set_num_threads(2)
    weight = torch.randn(n_rows, FACTORS, requires_grad=True)
    index = torch.randint(0, n_rows, (BATCH,))
    forward = backward = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        if kind == "embedding":
            out = torch.nn.functional.embedding(index, weight)
        else:
            out = torch.nn.functional.one_hot(index, n_rows).float() @ weight
        middle = time.perf_counter()
        out.sum().backward()
        forward += middle - started
        backward += time.perf_counter() - middle
        weight.grad = None
    return forward / repeats * 1e3, backward / repeats * 1e3, peak_rss_mib()


def embedding_vs_one_hot() -> str:
    rows = []
    for table, n_rows in (("users", 6_040), ("movies", 3_706)):
        for kind in ("embedding", "one-hot @ matrix"):
            forward, backward, mib = in_fresh_process(lookup_cost, (kind, n_rows, 200))
            rows.append(
                (
                    f"{table} ({n_rows:,} x {FACTORS})",
                    kind,
                    f"{forward:.3f}",
                    f"{backward:.3f}",
                    f"{mib:,.0f}",
                )
            )
            print(rows[-1], flush=True)
    return markdown_table(["table", "how", "forward ms", "backward ms", "process peak MiB"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="only the small sizes")
    arguments = parser.parse_args()
    sizes = [(6_040, 3_706, 1_000_209), (20_000, 10_000, 2_000_000)]
    if not arguments.quick:
        sizes += [(60_000, 30_000, 4_000_000), (162_541, 59_047, 5_000_000)]
    text = "\n\n".join(
        [
            f"Machine: {machine()}; batch {BATCH}, k = {FACTORS}; "
            f"dense epochs extrapolated from {DENSE_STEPS} steps.",
            rowwise_vs_dense(sizes),
            f"Embedding lookup vs one-hot product, batch of {BATCH} ids at ML-1M's sizes:",
            embedding_vs_one_hot(),
        ]
    )
    write_result("math.md", text)


if __name__ == "__main__":
    main()
