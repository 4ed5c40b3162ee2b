"""Request and response bodies of the REST API (pydantic v2), with the examples /docs shows.

Requests forbid unknown fields (a misspelt field is a 422 naming it, never silently ignored).
Ids in bodies are strict JSON integers in 1 .. 2**63 - 1: a string, a float or a boolean is
rejected, not coerced. Ratings are finite JSON numbers; the configured scale is checked by the
route (it is a runtime setting).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from app.api.limits import capped
from app.serving.recommendations import Item

MAX_ID = 2**63 - 1
"""The largest id: ids are positive signed 64-bit integers."""

ID_RULE = f"a positive 64-bit integer (1 to {MAX_ID})"

Id = Annotated[StrictInt, Field(gt=0, le=MAX_ID, description=f"An id: {ID_RULE}.")]
UserId = Annotated[StrictInt, Field(gt=0, le=MAX_ID, description=f"A user id: {ID_RULE}.", examples=[42])]
MovieId = Annotated[StrictInt, Field(gt=0, le=MAX_ID, description=f"A movie id: {ID_RULE}.", examples=[1])]
RatingValue = Annotated[
    StrictFloat,
    Field(
        allow_inf_nan=False,
        description="A rating on the configured scale (default 0.5 to 5.0 in steps of 0.5).",
        examples=[4.5],
    ),
]

Strategy = Literal["model", "fold_in", "baseline", "user_baseline", "popular"]
"""How a prediction was made.

- model: the user and the movie are both in the model.
- fold_in: the user is not in the model but has ratings; their embedding was solved from them.
- baseline: the user has no ratings; the global mean plus the movie's bias.
- user_baseline: the movie is not in the model; the global mean plus the user's bias.
- popular: (recommendations) the user has no usable ratings; the best-rated movies.
"""


class RequestBody(BaseModel):
    """Base of request bodies: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


# --- ratings ----------------------------------------------------------------------------------------


EARLIEST_RATED_AT = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
"""How far ahead of this server's clock a rated_at may be (clients' clocks drift)."""


def _plausible_time(value: datetime) -> datetime:
    """`value` in UTC (naive: taken as UTC), from 1970 to a day from now; else ValueError."""
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # an offset that carries it past year 9999 or before year 1
        raise ValueError("rated_at is outside the range of dates (years 1 to 9999 in UTC)") from None
    latest = datetime.now(UTC) + FUTURE_SLACK
    if not EARLIEST_RATED_AT <= moment <= latest:
        raise ValueError(
            f"rated_at must lie between {EARLIEST_RATED_AT:%Y-%m-%d} and a day from now "
            f"({latest:%Y-%m-%dT%H:%MZ}), not {moment.isoformat()}"
        )
    return moment


RatedAt = Annotated[datetime, AfterValidator(_plausible_time)]


class RatingIn(RequestBody):
    user_id: UserId
    movie_id: MovieId
    rating: RatingValue
    rated_at: RatedAt | None = Field(
        default=None,
        description="When it was rated (ISO-8601; no time zone means UTC), from 1970 to a day "
        "from now. Default: now.",
        examples=["2024-05-01T12:00:00Z"],
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": 42, "movie_id": 1, "rating": 4.5}]})


class RatingOut(BaseModel):
    user_id: int
    movie_id: int
    rating: float
    rated_at: datetime
    created: bool = Field(description="True when the rating is new, False when it replaced an earlier one.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 42,
                    "movie_id": 1,
                    "rating": 4.5,
                    "rated_at": "2024-05-01T12:00:00Z",
                    "created": True,
                }
            ]
        }
    )


class RatingBatchIn(RequestBody):
    ratings: Annotated[list[RatingIn], capped("max_batch_ratings", "ratings in one batch")] = Field(
        description="The ratings to store, all or none (at most MAX_BATCH_RATINGS, default 10,000). "
        "Of several ratings of one (user, movie) the last wins."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ratings": [
                        {"user_id": 42, "movie_id": 1, "rating": 4.5},
                        {"user_id": 42, "movie_id": 2, "rating": 3.0, "rated_at": "2024-05-01T12:00:00Z"},
                    ]
                }
            ]
        }
    )


class RowError(BaseModel):
    index: int = Field(description="Position of the rating in the batch, from 0.")
    field: str
    message: str


class RatingBatchOut(BaseModel):
    inserted: int
    updated: int
    errors: list[RowError] = Field(
        default_factory=list, description="Always empty on success: a batch with errors stores nothing."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"inserted": 2, "updated": 0, "errors": []}]})


class RatingItem(BaseModel):
    movie_id: int
    rating: float
    rated_at: datetime


class UserRatingsOut(BaseModel):
    user_id: int
    total: int = Field(description="How many ratings the user has in all.")
    limit: int
    offset: int
    items: list[RatingItem] = Field(description="Newest first.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 42,
                    "total": 1,
                    "limit": 50,
                    "offset": 0,
                    "items": [{"movie_id": 1, "rating": 4.5, "rated_at": "2024-05-01T12:00:00Z"}],
                }
            ]
        }
    )


# --- movies -----------------------------------------------------------------------------------------


def no_nul(text: str) -> str:
    """Text with no NUL character (PostgreSQL's text cannot hold one), and not blank."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    if not text.strip():
        raise ValueError("must not be blank (only whitespace)")
    return text


Genre = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[^|]+$", examples=["Comedy"]),
    AfterValidator(no_nul),
]


class MovieIn(RequestBody):
    movie_id: MovieId
    title: Annotated[
        str, Field(min_length=1, max_length=500, examples=["Toy Story (1995)"]), AfterValidator(no_nul)
    ]
    year: Annotated[StrictInt | None, Field(ge=1000, le=9999, examples=[1995])] = None
    genres: Annotated[list[Genre], Field(max_length=50)] = Field(default_factory=list)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "movie_id": 200001,
                    "title": "A New Film (2025)",
                    "year": 2025,
                    "genres": ["Comedy", "Drama"],
                }
            ]
        }
    )


class MovieOut(BaseModel):
    movie_id: int
    title: str
    year: int | None
    genres: list[str]
    in_model: bool | None = Field(
        default=None, description="Whether the loaded model has an embedding for it (null: no model)."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "movie_id": 1,
                    "title": "Toy Story (1995)",
                    "year": 1995,
                    "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
                    "in_model": True,
                }
            ]
        }
    )


class MoviePage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[MovieOut]


class SimilarItem(BaseModel):
    movie_id: int
    title: str | None
    similarity: float = Field(description="Cosine similarity of the two movies' embeddings, -1 to 1.")


class SimilarOut(BaseModel):
    movie_id: int
    model_version: str
    items: list[SimilarItem]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "movie_id": 1,
                    "model_version": "20250101T000000000000Z-1a2b3c4d",
                    "items": [{"movie_id": 3114, "title": "Toy Story 2 (1999)", "similarity": 0.91}],
                }
            ]
        }
    )


# --- predictions ------------------------------------------------------------------------------------


class Explanation(BaseModel):
    """The parts of a score. For model and fold_in:
    rating = lo + (hi - lo) * sigmoid(user_bias + movie_bias + dot_product);
    for baseline and user_baseline: rating = clip(global_mean + bias) to the scale."""

    formula: str
    global_mean: float | None = None
    user_bias: float | None = None
    movie_bias: float | None = None
    dot_product: float | None = None
    factor_products: list[float] = Field(default_factory=list)
    score: float | None = Field(default=None, description="The pre-sigmoid sum (model and fold_in).")
    y_range: list[float] | None = None


class PredictionOut(BaseModel):
    user_id: int
    movie_id: int
    rating: float
    model_version: str
    strategy: Strategy
    movie_in_model: bool = Field(
        description="False when the movie has no embedding yet: the rating is the user's baseline."
    )
    explain: Explanation | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 42,
                    "movie_id": 1,
                    "rating": 4.12,
                    "model_version": "20250101T000000000000Z-1a2b3c4d",
                    "strategy": "model",
                    "movie_in_model": True,
                }
            ]
        }
    )


class PairsIn(RequestBody):
    # fail_fast: the first bad pair is reported, not one error for each of 100,000
    pairs: Annotated[
        list[tuple[UserId, MovieId]], Field(fail_fast=True), capped("max_pairs", "pairs in one request")
    ] = Field(
        description="[user_id, movie_id] pairs (at most MAX_PAIRS, default 100,000); the first "
        "invalid pair is reported.",
        examples=[[[42, 1], [42, 2], [7, 1]]],
    )


class PairsOut(BaseModel):
    model_version: str
    ratings: list[float]
    strategies: list[Strategy] = Field(description="The strategy of each pair, as in GET /predict.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": "20250101T000000000000Z-1a2b3c4d",
                    "ratings": [4.12, 3.3, 3.9],
                    "strategies": ["model", "model", "fold_in"],
                }
            ]
        }
    )


class MatrixIn(RequestBody):
    user_ids: (
        Annotated[list[UserId], Field(fail_fast=True), capped("max_matrix_ids", "user ids in one request")]
        | None
    ) = Field(
        default=None,
        description="Rows (at most MAX_MATRIX_IDS, default 100,000); omitted: every user in the "
        "model, ascending.",
    )
    movie_ids: (
        Annotated[list[MovieId], Field(fail_fast=True), capped("max_matrix_ids", "movie ids in one request")]
        | None
    ) = Field(
        default=None,
        description="Columns (at most MAX_MATRIX_IDS); omitted: every movie in the model, ascending.",
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"user_ids": [1, 2], "movie_ids": [1, 2, 3]}]})


class MatrixOut(BaseModel):
    model_version: str
    user_ids: list[int]
    movie_ids: list[int]
    ratings: list[list[float]] = Field(description="ratings[i][j]: user_ids[i]'s rating of movie_ids[j].")
    user_strategies: list[Strategy] = Field(description="How each row's user is scored.")
    movies_not_in_model: list[int] = Field(description="Columns scored by each user's baseline.")


# --- recommendations --------------------------------------------------------------------------------


RecommendationItem = Item
"""A recommended movie (defined by app.serving, which keeps finished lists of them)."""


RecommendationStrategy = Literal["model", "fold_in", "popular", "precomputed"]
"""How a recommendation list was made: as Strategy, or precomputed: taken from the
RECOMMENDATIONS_TABLE made from the serving model (the model's ranking, filtered now)."""


class RecommendationsOut(BaseModel):
    user_id: int
    model_version: str
    strategy: RecommendationStrategy
    items: list[RecommendationItem] = Field(description="Ordered by `score`, descending (best first).")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 42,
                    "model_version": "20250101T000000000000Z-1a2b3c4d",
                    "strategy": "model",
                    "items": [
                        {
                            "movie_id": 318,
                            "title": "Shawshank Redemption (1994)",
                            "predicted_rating": 4.6,
                            "score": 0.93,
                        }
                    ],
                }
            ]
        }
    )


# --- service ----------------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    auth: Literal["on", "off"] = Field(
        description="on: writes and /admin need X-API-Key; off: API_KEY is unset and they are open."
    )


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    model_version: str
    checks: dict[str, str]


class PrecomputedOut(BaseModel):
    path: str
    created_at: str
    users: int
    k: int | None
    rated_excluded: bool


class ModelOut(BaseModel):
    version: str
    created_at: str | None
    loaded_at: datetime
    path: str
    n_users: int
    n_movies: int
    n_factors: int
    n_ratings: int | None
    global_mean: float
    y_range: list[float]
    rating_scale: dict[str, float]
    metrics: dict[str, Any]
    hyper_parameters: dict[str, Any]
    data_source: str | None
    data_fingerprint: dict[str, Any]
    fold_in_cache_size: int
    objective: str | None = Field(
        None, description="What `dotrec train --objective` fitted: rating, ranking or both (null: older)."
    )
    ranking_head: dict[str, Any] | None = Field(
        None, description="The ranking head GET /recommendations ranks by (null: lists rank by rating)."
    )
    recommendations_table: PrecomputedOut | None = Field(
        None, description="The RECOMMENDATIONS_TABLE serving GET /recommendations; null when none is loaded."
    )


class ModelIdsOut(BaseModel):
    version: str
    user_ids: list[int]
    movie_ids: list[int]


class ReloadOut(BaseModel):
    reloaded: bool = Field(description="False when the newest artifact is the one already serving.")
    version: str
    previous_version: str | None
    seconds: float

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "reloaded": True,
                    "version": "20250102T000000000000Z-5e6f7a8b",
                    "previous_version": "20250101T000000000000Z-1a2b3c4d",
                    "seconds": 0.21,
                }
            ]
        }
    )


class FieldError(BaseModel):
    """One invalid input of a 422: where it is, what is wrong, and the rule's name."""

    loc: list[str | int] = Field(description='Where: "body", "path" or "query", then names and positions.')
    msg: str = Field(description="What is wrong, naming the rule.")
    type: str = Field(description='The rule, e.g. "missing", "extra_forbidden", "rating_off_scale".')
    input: Any = Field(default=None, description="The value sent, when it is short (else left out).")


class ErrorOut(BaseModel):
    """Every error: `detail` says what is wrong (a string, or a list of field errors for 422)."""

    detail: str | list[FieldError]

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "movie 999999 is not in the catalog"}]}
    )


class BatchErrorOut(ErrorOut):
    """A refused batch: nothing was stored; `errors` lists every bad row."""

    errors: list[RowError]


class NotReadyOut(ErrorOut):
    """GET /ready's 503: `detail` sums up what is not ready; `checks` has each check's result."""

    checks: dict[str, str]
