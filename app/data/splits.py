"""Ways to hold ratings out: random (seeded), by time per user, and k folds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

from app.data.training_set import TrainingSet

SplitKind = Literal["random", "time", "user"]


def holdout_mask(n: int, holdout: float, seed: int) -> np.ndarray:
    """bool (n,): a seeded random `holdout` fraction of n rows set."""
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[: round(n * holdout)]] = True
    return mask


def split_random(data: TrainingSet, holdout: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
    """A seeded random `holdout` fraction of the ratings as the second part."""
    held = holdout_mask(len(data), holdout, seed)
    return data.subset(~held), data.subset(held)


def split_by_time(data: TrainingSet, holdout: float) -> tuple[TrainingSet, TrainingSet]:
    """Each user's newest `holdout` fraction of ratings as the second part ("predict the future").

    A user with a single rating keeps it in the first part, so every held-out user is known.
    """
    order = np.lexsort((data.timestamps, data.user_rows))
    users_sorted = data.user_rows[order]
    starts = np.searchsorted(users_sorted, users_sorted, side="left")
    counts = np.bincount(data.user_rows, minlength=data.n_users)[users_sorted]
    rank_in_user = np.arange(len(order)) - starts
    n_held = np.floor(counts * holdout).astype(np.int64)
    held = rank_in_user >= counts - n_held
    return data.subset(np.sort(order[~held])), data.subset(np.sort(order[held]))


def per_user_mask(user_rows: np.ndarray, share: float, seed: int) -> np.ndarray:
    """bool (n,) mask of held-out ratings: per user, round(share * count) of them, chosen at random.

    Every user keeps at least one rating in training. Deterministic for a seed: a random key per
    rating, ratings ranked by key within each user, the lowest ranks held out.
    """
    rng = np.random.default_rng(seed)
    keys = rng.random(len(user_rows))
    order = np.lexsort((keys, user_rows))
    counts = np.bincount(user_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(user_rows), dtype=np.int64)
    rank[order] = np.arange(len(user_rows)) - np.repeat(starts, counts)
    held = np.minimum(np.round(share * counts), counts - 1)
    return rank < held[user_rows]


def split_per_user(data: TrainingSet, holdout: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
    """Per user, a seeded random `holdout` share of their ratings as the second part (the
    ranking protocol's split: every user is both learnt from and tested)."""
    held = per_user_mask(data.user_rows, holdout, seed)
    return data.subset(~held), data.subset(held)


def split(data: TrainingSet, kind: SplitKind, holdout: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
    """(train, held-out) by `kind`."""
    if kind == "time":
        return split_by_time(data, holdout)
    if kind == "user":
        return split_per_user(data, holdout, seed)
    return split_random(data, holdout, seed)


def carve_validation(
    data: TrainingSet, kind: SplitKind, share: float, seed: int
) -> tuple[TrainingSet, TrainingSet]:
    """(train, validation) for early stopping, where every validation rating's user and movie
    also has training ratings: a row learnt from no rating would be saved untrained and then
    served as if the model knew it. Such ratings go back to the training part."""
    train, validation = split(data, kind, share, seed)
    seen_users = np.bincount(train.user_rows, minlength=data.n_users) > 0
    seen_movies = np.bincount(train.movie_rows, minlength=data.n_movies) > 0
    unseen = ~(seen_users[validation.user_rows] & seen_movies[validation.movie_rows])
    if not unseen.any():
        return train, validation
    merged = np.concatenate([train.timestamps, validation.timestamps[unseen]])
    back = validation.subset(unseen)
    train = TrainingSet(
        user_rows=np.concatenate([train.user_rows, back.user_rows]),
        movie_rows=np.concatenate([train.movie_rows, back.movie_rows]),
        ratings=np.concatenate([train.ratings, back.ratings]),
        timestamps=merged,
        user_ids=data.user_ids,
        movie_ids=data.movie_ids,
        fingerprint=data.fingerprint,
    )
    return train, validation.subset(~unseen)


def k_fold_masks(n: int, k: int, seed: int) -> Iterator[np.ndarray]:
    """bool (n,) test masks of k seeded random folds; every row is in exactly one."""
    for fold in np.array_split(np.random.default_rng(seed).permutation(n), k):
        mask = np.zeros(n, dtype=bool)
        mask[fold] = True
        yield mask


def k_folds(data: TrainingSet, k: int, seed: int) -> Iterator[tuple[TrainingSet, TrainingSet]]:
    """(train, test) for each of k seeded random folds; every rating is tested exactly once."""
    for test_mask in k_fold_masks(len(data), k, seed):
        yield data.subset(~test_mask), data.subset(test_mask)
