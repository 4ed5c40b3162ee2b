"""The ratings store's tables: the movie catalog, the users who rate, and their ratings.

Times of ratings are stored as unix seconds (``BigInteger``), the unit MovieLens files and
`TrainingSet` use, so bulk import and export move plain integers on every dialect.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    REAL,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RATING_CHECK_MIN = 0.5
"""Lowest rating the schema's CHECK accepts."""
RATING_CHECK_MAX = 5.0
"""Highest rating the schema's CHECK accepts."""
RATING_CHECK_STEP = 0.5
"""The CHECK accepts only whole multiples of this step."""


class Base(DeclarativeBase):
    """Declarative base whose metadata names every constraint by `NAMING_CONVENTION`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Movie(Base):
    """A catalog entry; `id` is the catalog's own id (MovieLens movieId), never generated."""

    __tablename__ = "movies"
    __table_args__ = (CheckConstraint("id > 0", name="id_positive"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(Text)
    year: Mapped[int | None] = mapped_column(Integer)
    genres: Mapped[str] = mapped_column(Text, server_default="")


class User(Base):
    """Someone who rates; `id` is the client's id, created on the first rating."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("id > 0", name="id_positive"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Rating(Base):
    """One user's rating of one movie; at most one per (user, movie), the latest write wins.

    The primary key (user_id, movie_id) serves "ratings of a user"; `ix_ratings_movie_id`
    serves "ratings of a movie". On SQLite the table is WITHOUT ROWID: rows are stored in
    primary-key order, which makes bulk imports sorted by key and full scans cheaper.

    The CHECK constraint `ck_ratings_rating_on_scale` is fixed by the migration to the default
    scale: RATING_CHECK_MIN..RATING_CHECK_MAX in steps of RATING_CHECK_STEP. It is the outer
    bound of what the store holds, not the configured scale: the application validates values
    against `Settings` (whose scale may be that one or any scale whose values all lie on it,
    e.g. 1..5 step 1), and the CHECK rejects anything outside it whatever wrote it.
    A scale outside it (e.g. 1..10) needs a new migration; `scale_fits_schema` tells.
    """

    __tablename__ = "ratings"
    __table_args__ = (
        CheckConstraint(
            f"CASE WHEN rating >= {RATING_CHECK_MIN} AND rating <= {RATING_CHECK_MAX}"
            f" THEN rating / {RATING_CHECK_STEP} = CAST(rating / {RATING_CHECK_STEP} AS INTEGER)"
            " ELSE false END",
            name="rating_on_scale",
        ),
        {"sqlite_with_rowid": False},
    )

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    movie_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    rating: Mapped[float] = mapped_column(REAL)
    rated_at: Mapped[int] = mapped_column(BigInteger)
    """Unix seconds; 0 where the source had no time."""


def scale_fits_schema(allowed_ratings: list[float]) -> bool:
    """True when every value of a configured scale passes the ratings CHECK constraint."""
    return all(
        RATING_CHECK_MIN <= value <= RATING_CHECK_MAX and (value / RATING_CHECK_STEP).is_integer()
        for value in allowed_ratings
    )
