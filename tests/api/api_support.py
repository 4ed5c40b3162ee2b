"""Data and helpers of the API tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.config import Settings
from app.data.training_set import TrainingSet
from app.db.rating_writes import upsert_ratings
from app.db.repository import RatingRow, create_movie

N_USERS = 60
N_MOVIES = 40
"""Movies 1..N_MOVIES are rated and in the model; the catalog also has CATALOG_ONLY."""
CATALOG_ONLY = [41, 42, 43]
GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Film-Noir"]
API_KEY = "test-key-\u00e9t\u00e9"  # non-ASCII on purpose: compared as UTF-8 bytes
NEW_USER = 5_000
"""A user id no test data uses."""

ClientMaker = Callable[..., TestClient]


@dataclass(frozen=True)
class Data:
    users: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    catalog: list[tuple[int, str, int, list[str]]]

    def rated_by(self, user_id: int) -> dict[int, float]:
        mask = self.users == user_id
        return dict(zip(self.movies[mask].tolist(), self.ratings[mask].tolist(), strict=True))

    def genres_of(self, movie_id: int) -> list[str]:
        return next(genres for i, _, _, genres in self.catalog if i == movie_id)

    def write_csv(self, folder: Path) -> Path:
        """ratings.csv and movies.csv (MovieLens' ml-latest layout) in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["userId,movieId,rating,timestamp"]
        lines += [
            f"{u},{m},{r:g},{t}"
            for u, m, r, t in zip(self.users, self.movies, self.ratings, self.timestamps, strict=True)
        ]
        (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
        movies = ["movieId,title,genres"] + [
            f'{i},"{title}",{"|".join(g)}' for i, title, _, g in self.catalog
        ]
        (folder / "movies.csv").write_text("\n".join(movies) + "\n")
        return folder


def make_data(seed: int = 0) -> Data:
    """Planted low-rank ratings on the half-star scale; every user rates 10..20 movies, every
    model movie is rated."""
    rng = np.random.default_rng(seed)
    user_f = rng.normal(0, 0.7, (N_USERS, 3))
    movie_f = rng.normal(0, 0.7, (N_MOVIES, 3))
    movie_b = rng.normal(0, 0.5, N_MOVIES)
    users, movies = [], []
    for user in range(N_USERS):
        chosen = rng.choice(N_MOVIES, size=int(rng.integers(10, 21)), replace=False)
        users += [user] * len(chosen)
        movies += chosen.tolist()
    unrated = sorted(set(range(N_MOVIES)) - set(movies))
    users += [0] * len(unrated)
    movies += unrated
    u, m = np.array(users), np.array(movies)
    raw = 3.5 + movie_b[m] + (user_f[u] * movie_f[m]).sum(1) + rng.normal(0, 0.3, len(u))
    ratings = np.clip(np.round(raw * 2) / 2, 0.5, 5.0).astype(np.float32)
    timestamps = rng.integers(1_500_000_000, 1_600_000_000, len(u))
    catalog = [
        (i, f"Movie {i} ({1990 + i % 30})", 1990 + i % 30, sorted({GENRES[i % 5], GENRES[(i * 7) % 5]}))
        for i in range(1, N_MOVIES + 1)
    ]
    catalog += [(i, f"Catalog only {i} (2024)", 2024, ["Drama"]) for i in CATALOG_ONLY]
    return Data(u + 1, m + 1, ratings, timestamps, catalog)


def api_settings(**overrides: object) -> Settings:
    # model_poll_s 0: an in-process app loads a new version only when a test reloads it
    values: dict[str, object] = {"rating_min": 0.5, "rating_max": 5.0, "rating_step": 0.5, "model_poll_s": 0}
    return Settings(_env_file=None, **(values | overrides))


def started_clients(database_url: str, models_dir: Path) -> Iterator[ClientMaker]:
    """A fixture's body: yields a maker of started TestClients on `database_url` and
    `models_dir` (keyword arguments override settings), and stops them all afterwards."""
    from app.api.main import create_app

    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = api_settings(**({"database_url": database_url, "models_dir": models_dir} | overrides))
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


def train_model(
    data: Data, models_dir: Path, seed: int = 0, epochs: int = 3, objective: str = "both"
) -> Path:
    """Train a tiny model on `data` into `models_dir` (torch is imported here, in the tests only)."""
    from app.jobs.training import train_and_save
    from app.ml.train import TrainConfig

    training = TrainingSet.from_arrays(data.users, data.movies, data.ratings, data.timestamps)
    config = TrainConfig(n_factors=8, epochs=epochs, seed=seed, batch_size=128, lr=0.02)
    settings = api_settings(models_dir=models_dir)
    return train_and_save(training, settings, config, objective=objective).path  # type: ignore[arg-type]


def seed_database(engine: Engine, data: Data) -> None:
    with Session(engine) as session, session.begin():
        for movie_id, title, year, genres in data.catalog:
            create_movie(session, movie_id, title, year, genres)
        rows = [
            RatingRow(int(u), int(m), float(r), datetime.fromtimestamp(int(t), UTC))
            for u, m, r, t in zip(data.users, data.movies, data.ratings, data.timestamps, strict=True)
        ]
        upsert_ratings(session, rows)


def add_version(models_dir: Path, scale: float = 1.5, shift: float = 0.2) -> str:
    """Save a new version derived from the current one (embeddings scaled, movie biases shifted),
    without training; returns its version name."""
    from app.ml.artifact import current_version_dir, load_artifact, new_version_name, save_artifact

    current = load_artifact(current_version_dir(models_dir))
    weights = {name: np.array(w) for name, w in current.weights.items()}
    weights["user_emb"] *= scale
    weights["movie_emb"] *= scale
    weights["movie_bias"] += shift
    meta = {k: v for k, v in current.meta.items() if k not in ("format_version", "created_at")}
    meta["version"] = new_version_name({"sha256": f"derived{scale}"})
    return save_artifact(models_dir, weights, meta).name


def add_corrupt_version(models_dir: Path, name: str = "29990101T000000000000Z-corrupt0") -> Path:
    """A version folder whose weights file is garbage, made `current`."""
    from app.ml.artifact import current_version_dir, point_current_at

    source = current_version_dir(models_dir)
    folder = models_dir / name
    folder.mkdir()
    meta = json.loads((source / "meta.json").read_text())
    meta["version"] = name
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json" + b"\x00" * 64)
    point_current_at(models_dir, name)
    return folder
