"""Movies like a movie (GET /movies/{movie}/similar): nearest neighbours of its embedding."""

from __future__ import annotations

from app.ml import scoring
from app.serving.serving_model import ServingModel


def similar_movies(model: ServingModel, movie_row: int, k: int) -> list[tuple[int, str | None, float]]:
    """The k catalog movies nearest `movie_row` by cosine similarity of their ranking-head rows
    (of their rating-head embeddings for a model without one): (id, title, similarity)."""
    view = model.view()
    blocked = None if view.all_recommendable else ~view.recommendable
    rows, similarities = scoring.cosine_neighbours(
        model.neighbour_vectors, model.neighbour_norms, movie_row, k, blocked
    )
    ids = model.predictor.movie_ids[rows].tolist()
    return [
        (movie_id, view.titles[row], float(s))
        for movie_id, row, s in zip(ids, rows.tolist(), similarities.tolist(), strict=True)
    ]
