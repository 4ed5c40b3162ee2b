"""Bulk import: counts, idempotence, re-ratings, and exact reports of bad lines."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select, text

from app.config import Settings
from app.data.movielens import RatingsSet
from app.db import import_postgresql, import_sqlite
from app.db.importer import ImportRefused, import_ratings_set
from app.db.models import Base, Movie, Rating, User

RatingsSetMaker = Callable[[list[str], list[str]], RatingsSet]


def counts(engine: Engine) -> tuple[int, int, int]:
    """(movies, users, ratings) stored."""
    with engine.connect() as connection:
        return tuple(
            connection.scalar(select(func.count()).select_from(model)) for model in (Movie, User, Rating)
        )


def stored_ratings(engine: Engine) -> list[tuple[int, int, float, int]]:
    with engine.connect() as connection:
        query = select(Rating.user_id, Rating.movie_id, Rating.rating, Rating.rated_at)
        return [tuple(row) for row in connection.execute(query.order_by(Rating.user_id, Rating.movie_id))]


MOVIES = ["1,Toy Story (1995),Animation|Comedy", "2,Amélie (2001),Comedy|Romance"]
BAD_LINES = [
    "1,1,4,100",  # line 2: fine
    "1,2,4.5,100",  # line 3: fine
    "2,1,7,100",  # line 4: off the scale
    "2,99999,3,100",  # line 5: unknown movie
    "this line is malformed",  # line 6: one field
    "-1,1,3,100",  # line 7: user id not positive
    "3,0,3,100",  # line 8: movie id not positive
    "3,2,3.25,100",  # line 9: between two steps
    "3,2,3,100",  # line 10: fine
    "1,1,5,200",  # line 11: same pair as line 2, later: wins
]
BAD_LINE_NUMBERS = [4, 5, 6, 7, 8, 9]


@pytest.fixture
def bad_set(make_ratings_set: RatingsSetMaker) -> RatingsSet:
    return make_ratings_set(BAD_LINES, MOVIES)


def test_imports_ml100k_and_again_changes_nothing(
    engine: Engine, ml100k_set: RatingsSet, settings: Settings
) -> None:
    first = import_ratings_set(engine, ml100k_set, settings)
    assert (first.movies_added, first.users_added, first.ratings_added) == (1682, 943, 100_000)
    assert first.problems == [] and first.skipped == 0
    assert counts(engine) == (1682, 943, 100_000)

    second = import_ratings_set(engine, ml100k_set, settings)
    assert (second.movies_added, second.movies_updated, second.users_added) == (0, 0, 0)
    assert (second.ratings_added, second.ratings_updated, second.ratings_unchanged) == (0, 0, 100_000)
    assert counts(engine) == (1682, 943, 100_000)


def test_bad_lines_are_reported_exactly_and_skipped(
    engine: Engine, bad_set: RatingsSet, settings: Settings
) -> None:
    report = import_ratings_set(engine, bad_set, settings, on_error="skip")

    assert [problem.line for problem in report.problems] == BAD_LINE_NUMBERS
    assert report.skipped == len(BAD_LINE_NUMBERS)
    reasons = [problem.reason for problem in report.problems]
    assert "on the scale" in reasons[0] and "7" in reasons[0]
    assert "movie 99999 is not in the catalog" in reasons[1]
    assert "malformed" in reasons[2]
    assert "user id -1 is not positive" in reasons[3]
    assert "movie id 0 is not positive" in reasons[4]
    assert "3.25" in reasons[5]
    assert report.duplicates == 1
    assert (report.ratings_added, report.users_added, report.movies_added) == (3, 2, 2)
    assert stored_ratings(engine) == [(1, 1, 5.0, 200), (1, 2, 4.5, 100), (3, 2, 3.0, 100)]


def test_fail_refuses_and_leaves_the_database_as_it_was(
    engine: Engine, ml100k_set: RatingsSet, bad_set: RatingsSet, settings: Settings
) -> None:
    import_ratings_set(engine, ml100k_set, settings)
    before = stored_ratings(engine), counts(engine)

    with pytest.raises(ImportRefused) as refused:
        import_ratings_set(engine, bad_set, settings, on_error="fail")

    assert [problem.line for problem in refused.value.report.problems] == BAD_LINE_NUMBERS
    assert (stored_ratings(engine), counts(engine)) == before


def test_a_failure_while_writing_rolls_everything_back(
    engine: Engine, ml100k_set: RatingsSet, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(import_postgresql, "_pg_copy", explode)
    monkeypatch.setattr(import_sqlite, "_rating_batches", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_ratings_set(engine, ml100k_set, settings)

    assert counts(engine) == (0, 0, 0)
    monkeypatch.undo()
    assert import_ratings_set(engine, ml100k_set, settings).ratings_added == 100_000


def test_a_later_file_replaces_rating_and_time(
    engine: Engine, make_ratings_set: RatingsSetMaker, settings: Settings
) -> None:
    early = make_ratings_set(["7,1,3,100", "7,2,2,100"], MOVIES)
    late = make_ratings_set(["7,1,4.5,900", "7,2,2,100"], MOVIES)
    import_ratings_set(engine, early, settings)

    report = import_ratings_set(engine, late, settings)

    assert (report.ratings_added, report.ratings_updated, report.ratings_unchanged) == (0, 1, 1)
    assert stored_ratings(engine) == [(7, 1, 4.5, 900), (7, 2, 2.0, 100)]


def test_a_catalog_change_updates_the_movie(
    engine: Engine, make_ratings_set: RatingsSetMaker, settings: Settings
) -> None:
    import_ratings_set(engine, make_ratings_set(["1,1,3,1"], MOVIES), settings)
    renamed = ["1,Toy Story (1995),Animation|Children|Comedy", MOVIES[1]]
    report = import_ratings_set(engine, make_ratings_set(["1,1,3,1"], renamed), settings)
    assert (report.movies_added, report.movies_updated) == (0, 1)
    with engine.connect() as connection:
        assert connection.scalar(select(Movie.genres).where(Movie.id == 1)) == "Animation|Children|Comedy"


def test_a_narrower_scale_rejects_half_stars(engine: Engine, bad_set: RatingsSet) -> None:
    whole_stars = Settings(_env_file=None, rating_min=1, rating_max=5, rating_step=1)
    report = import_ratings_set(engine, bad_set, whole_stars)
    assert [problem.line for problem in report.problems] == [3, *BAD_LINE_NUMBERS]


def test_a_scale_beyond_the_schema_is_refused(engine: Engine, bad_set: RatingsSet) -> None:
    ten_stars = Settings(_env_file=None, rating_min=1, rating_max=10, rating_step=1)
    with pytest.raises(ValueError, match="migration"):
        import_ratings_set(engine, bad_set, ten_stars)


def test_bulk_load_keeps_the_schema(engine: Engine, ml100k_set: RatingsSet, settings: Settings) -> None:
    import_ratings_set(engine, ml100k_set, settings)
    with engine.begin() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        connection.execute(text("DELETE FROM movies WHERE id = 1"))
        remaining = connection.scalar(select(func.count()).select_from(Rating).where(Rating.movie_id == 1))
    assert remaining == 0
