"""Finished GET /recommendations answers of model users, kept as the bytes sent.

Such an answer depends on the model (its version and precomputed table), the catalog (its
revision: titles, genres, what is recommendable), the user, k, the genre, whether rated movies
are left out and, when they are, the version of the ratings they were read at. The key names all
of these, so an entry is reused only while it is still the answer: a commit of any process
makes a new ratings version, a model swap a new model version, a catalog change a new revision;
nothing is ever dropped by hand. The body is made by the route's response model when the entry
is made, so every answer sent has passed that model.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from fastapi import Response
from pydantic import TypeAdapter

from app.api.schemas import RecommendationsOut
from app.serving.caches import LockedLru
from app.serving.catalog import genre_key
from app.serving.serving_model import ServingModel

ANSWER_CACHE_BYTES = 16 * 2**20
"""Most bytes of kept answers (about 1 kB each for k = 10: ~16,000 answers)."""
ENTRY_OVERHEAD = 200
"""Bytes an entry costs besides its body (its key, the Answer, the LRU's links), roughly."""

_RESPONSE = TypeAdapter(RecommendationsOut)


@dataclass(frozen=True)
class Answer:
    """A GET /recommendations answer: its strategy and length (for the metrics) and its body."""

    strategy: str
    items: int
    body: bytes

    @classmethod
    def of(cls, payload: dict) -> Answer:
        """The answer of a route's return value, validated and serialised by RecommendationsOut."""
        answer = _RESPONSE.validate_python(payload)
        return cls(answer.strategy, len(answer.items), _RESPONSE.dump_json(answer))

    def response(self) -> Response:
        return Response(self.body, media_type="application/json")


def answer_key(
    model: ServingModel,
    user_id: int,
    k: int,
    exclude_rated: bool,
    genre: str | None,
    ratings_version: Hashable,
) -> Hashable:
    """The key of a model user's answer: everything it depends on (module docstring)."""
    table = model.precomputed
    return (
        model.version, table and table.signature, model.view().revision,
        user_id, k, exclude_rated, genre_key(genre), ratings_version,
    )  # fmt: skip


class AnswerCache(LockedLru[Hashable, Answer]):
    """Answers by everything they depend on, at most `capacity_bytes` of them."""

    def __init__(self, capacity_bytes: int = ANSWER_CACHE_BYTES) -> None:
        super().__init__(capacity_bytes, getsizeof=lambda answer: len(answer.body) + ENTRY_OVERHEAD)
