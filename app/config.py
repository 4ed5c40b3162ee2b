"""Settings read from the environment (and an optional `.env` file), one object for the process."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of dotrec; each field is read from the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    database_url: str = "sqlite:///data/dotrec.db"
    models_dir: Path = Path("models")
    data_dir: Path = Path("data")
    data_source: str = "ml-100k"
    #: the key writes and /admin need in X-API-Key; unset: they are open (logged at every start)
    api_key: SecretStr | None = None
    #: more accepted keys, a JSON list (rotation: the old and the new key, for a while)
    api_keys: list[SecretStr] = []

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

    max_matrix_cells: int = Field(1_000_000, gt=0)
    #: user ids and movie ids of one /predict/matrix, each list (the .npy cap is in cells)
    max_matrix_ids: int = Field(100_000, gt=0)
    max_pairs: int = Field(100_000, gt=0)
    max_batch_ratings: int = Field(10_000, gt=0)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    #: /predict/pairs, /predict/matrix and /ratings/batch computing at once in one process;
    #: more wait (at most db_timeout_s, then 503): what bounds their memory together
    max_heavy_requests: int = Field(2, gt=0)
    #: the longest wait for the next piece of a request body (a client that stops sending: 408)
    body_timeout_s: float = Field(30.0, gt=0)
    #: how often each serving process checks MODELS_DIR/current and loads a new version
    model_poll_s: float = Field(2.0, ge=0)
    #: `dotrec serve`'s connection limits (README, "Serving limits")
    server_keep_alive_s: int = Field(5, gt=0)
    server_header_timeout_s: float = Field(10.0, gt=0)
    server_max_header_bytes: int = Field(16 * 1024, gt=0)
    server_max_connections: int = Field(1000, gt=0)
    cors_origins: list[str] = []
    #: FULL: an acknowledged rating survives a power cut (a sync at every commit: with group
    #: commit, one a group); NORMAL: it survives a crash of the process, not of the machine
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    db_timeout_s: float = 5.0
    db_pool_size: int = 5

    @model_validator(mode="after")
    def _keys_are_keys(self) -> Settings:
        """An empty or blank key is a mistake (it could never match, or would hide that writes
        are open): refuse it rather than start. Unset is allowed, and warned about at start."""
        blank = "API_KEY" in os.environ and not os.environ["API_KEY"].strip()
        keys = [*([self.api_key] if self.api_key is not None else []), *self.api_keys]
        if blank or any(not key.get_secret_value().strip() for key in keys):
            raise ValueError(
                "API_KEY (or an entry of API_KEYS) is empty or blank: set a long random key "
                "(e.g. `openssl rand -hex 32`), or unset API_KEY to leave writes open"
            )
        return self

    def accepted_keys(self) -> list[bytes]:
        """The UTF-8 bytes of every key a client may send; empty: auth is off."""
        keys = [*([self.api_key] if self.api_key is not None else []), *self.api_keys]
        return [key.get_secret_value().encode("utf-8") for key in keys]

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
        """True when `rating` is one of the allowed values rating_min, rating_min + step, ..., rating_max
        (decimal arithmetic on the numbers as written: 1.1 on a 1..2 scale of step 0.1 is)."""
        if not self.rating_min <= rating <= self.rating_max:
            return False
        allowed = self._allowed_set
        if allowed is not None:  # the usual case: a float compared with the values, as parsed
            return rating in allowed
        steps = (Decimal(str(rating)) - Decimal(str(self.rating_min))) / Decimal(str(self.rating_step))
        return steps == steps.to_integral_value()

    @cached_property  # a plain attribute once computed: the check runs for every rating written
    def _allowed_set(self) -> frozenset[float] | None:
        """The allowed values as floats (each parsed from its decimal text, as JSON would give
        it), for scales of at most 100,000 values; None for larger ones."""
        steps = (Decimal(str(self.rating_max)) - Decimal(str(self.rating_min))) / Decimal(
            str(self.rating_step)
        )
        if steps > 100_000:
            return None
        return frozenset(
            float(Decimal(str(self.rating_min)) + i * Decimal(str(self.rating_step)))
            for i in range(int(steps) + 1)
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
