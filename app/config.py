"""Settings read from the environment (and an optional `.env` file), one object for the process."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of dotrec; each field is read from the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    database_url: str = "sqlite:///data/dotrec.db"
    models_dir: Path = Path("models")
    data_dir: Path = Path("data")
    data_source: str = "ml-100k"
    api_key: SecretStr | None = None

    rating_min: float = 0.5
    rating_max: float = 5.0
    rating_step: float = 0.5

    #: top-N lists rank by predicted rating + this * log(1 + the movie's ratings); see README
    popularity_weight: float = 0.5

    #: a `dotrec recommend-all` parquet file GET /recommendations answers from (strategy
    #: "precomputed") while it was made from the serving model after its training; else ignored
    recommendations_table: Path | None = None

    #: serve GET /predict and GET /recommendations through Starlette routes ahead of FastAPI's
    #: router (same parameters, validation and response models; app/api/fast_routes.py)
    fast_routes: bool = True

    max_matrix_cells: int = 1_000_000
    max_pairs: int = 100_000
    max_batch_ratings: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    cors_origins: list[str] = []
    db_timeout_s: float = 5.0
    db_pool_size: int = 5

    @model_validator(mode="after")
    def _scale_is_sane(self) -> Settings:
        if not 0 < self.rating_step <= self.rating_max - self.rating_min:
            raise ValueError("rating_step must be positive and no larger than the scale's width")
        if not self.rating_steps_exact(self.rating_max - self.rating_min):
            raise ValueError("rating_max - rating_min must be a whole number of rating_step")
        return self

    def rating_steps_exact(self, offset: float) -> bool:
        """True when `offset` is a whole number of rating steps (decimal arithmetic, no float drift)."""
        steps = Decimal(str(offset)) / Decimal(str(self.rating_step))
        return steps == steps.to_integral_value()

    def is_on_scale(self, rating: float) -> bool:
        """True when `rating` is one of the allowed values rating_min, rating_min + step, ..., rating_max."""
        return self.rating_min <= rating <= self.rating_max and self.rating_steps_exact(
            rating - self.rating_min
        )

    def allowed_ratings(self) -> list[float]:
        n = round((self.rating_max - self.rating_min) / self.rating_step)
        return [round(self.rating_min + i * self.rating_step, 6) for i in range(n + 1)]

    @property
    def cache_dir(self) -> Path:
        """Where downloaded data sets are kept."""
        return self.data_dir / "cache"


@lru_cache
def get_settings() -> Settings:
    return Settings()
