"""One predicted rating and how it was made (GET /predict/{user}/{movie}).

Movies: one the model has no row for (added to the catalog after training) gets the user's
baseline, the global mean plus the user's damped bias ("user_baseline"). Personal ratings come
from the same kernel call as pairs and matrices, so every endpoint agrees to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.serving.serving_model import ServingModel
from app.serving.users import COLD, FOLD_IN, MODEL, UserState, user_terms

#: strategy of a prediction, by the user's kind, for movies the model knows
PREDICT_STRATEGY = {MODEL: "model", FOLD_IN: "fold_in", COLD: "baseline"}
USER_BASELINE = "user_baseline"


@dataclass(frozen=True)
class Prediction:
    rating: float
    strategy: str
    movie_in_model: bool
    explain: dict | None = None


def predict_one(model: ServingModel, user: UserState, movie_id: int, explain: bool = False) -> Prediction:
    """The rating of `movie_id` (a catalog movie) for `user`, and how it was made."""
    predictor = model.predictor
    terms = user_terms(model, user)
    movie_row = predictor.movies.row(movie_id)
    if movie_row is None:
        parts = {
            "formula": "clip(global_mean + user_bias)",
            "global_mean": predictor.global_mean,
            "user_bias": terms.baseline_offset,
        }
        rating = predictor.user_baseline(terms.baseline_offset)
        return Prediction(rating, USER_BASELINE, False, parts if explain else None)
    if terms.vector is None:
        parts = {
            "formula": "clip(global_mean + movie_bias)",
            "global_mean": predictor.global_mean,
            "movie_bias": float(predictor.baseline_movie_bias[movie_row]),
        }
        baseline = float(predictor.baseline(np.array([movie_row]))[0])
        return Prediction(baseline, "baseline", True, parts if explain else None)
    rating = predictor.pair_rating(terms.vector, terms.bias, movie_row)
    parts = None
    if explain:
        products = terms.vector * predictor.movie_emb[movie_row]
        parts = {
            "formula": "lo + (hi - lo) * sigmoid(user_bias + movie_bias + dot_product)",
            "user_bias": float(terms.bias),
            "movie_bias": float(predictor.movie_bias[movie_row]),
            "dot_product": float(products.sum()),
            "factor_products": products.tolist(),
            "score": float(products.sum() + terms.bias + predictor.movie_bias[movie_row]),
            "y_range": list(predictor.y_range),
        }
    return Prediction(rating, PREDICT_STRATEGY[user.kind], True, parts)
