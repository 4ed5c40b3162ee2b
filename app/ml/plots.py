"""Pictures of what was learnt: training curves and a 2-D PCA map of movie embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from app.ml.train import EpochStats


def plot_training_curves(history: Sequence[EpochStats], path: Path) -> Path:
    """Training loss and validation RMSE per epoch, as a PNG at `path`."""
    epochs = [h.epoch for h in history]
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    axes.plot(epochs, [h.train_loss**0.5 for h in history], marker="o", label="train sqrt(loss)")
    validation = [h.val_rmse for h in history if h.val_rmse is not None]
    if validation:
        axes.plot(epochs[: len(validation)], validation, marker="o", label="validation RMSE")
    axes.set(xlabel="epoch", ylabel="rating error", title="Training curves")
    axes.legend()
    axes.grid(alpha=0.3)
    return _save(figure, path)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """(n, k) -> (n, 2): the rows projected on their two main principal components."""
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_movie_map(
    movie_emb: np.ndarray,
    movie_ids: np.ndarray,
    titles: Mapping[int, str],
    counts: np.ndarray,
    path: Path,
    n_labelled: int = 50,
) -> Path:
    """The most-rated movies on the first two principal components of their embeddings.

    Args:
        movie_emb: float (n_movies, k) embedding rows.
        movie_ids: int (n_movies,) external id of each row.
        titles: external id -> title.
        counts: int (n_movies,) training ratings per row; the most-rated are drawn.
        path: where the PNG goes.
        n_labelled: how many movies to draw and label.
    """
    rows = np.argsort(-counts)[:n_labelled]
    points = pca_2d(movie_emb[rows])
    figure = Figure(figsize=(12, 12))
    axes = figure.subplots()
    axes.scatter(points[:, 0], points[:, 1], s=8)
    for (x, y), row in zip(points, rows, strict=True):
        axes.annotate(titles.get(int(movie_ids[row]), str(movie_ids[row]))[:40], (x, y), fontsize=8)
    axes.set(title="Movie embeddings, first two principal components", xlabel="PC 1", ylabel="PC 2")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
