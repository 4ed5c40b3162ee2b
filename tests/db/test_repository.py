"""The repository functions the REST API calls, on both dialects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import rating_writes as writes
from app.db import repository as repo
from app.db.models import Movie, Rating, User
from app.db.repository import MovieExists, RatingRow, UnknownMovie
from app.db.session import make_session_factory, write_transaction

CATALOG = {
    1: ("Toy Story (1995)", 1995, ["Animation", "Children's", "Comedy"]),
    2: ("Amélie (2001)", 2001, ["Comedy", "Romance"]),
    3: ("ÉCOLE DES FEMMES, L' (1991)", 1991, ["Drama"]),
    4: ("Robert'); DROP TABLE movies;-- (2020)", 2020, ["Drama", "Comedy"]),
    5: ("100% Pure_Fun (1999)", 1999, ["Documentary"]),
    6: ("東京物語 (1953)", None, ["Drama"]),
}
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0.timestamp() + seconds, UTC)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on a store whose catalog is `CATALOG` (committed)."""
    with make_session_factory(engine)() as session:
        for movie_id, (title, year, genres) in CATALOG.items():
            repo.create_movie(session, movie_id, title, year, genres)
        session.commit()
        yield session


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_upsert_creates_then_replaces(session: Session) -> None:
    row, created = writes.upsert_rating(session, 10, 1, 3.5, at(0))
    assert created and row == RatingRow(10, 1, 3.5, at(0))
    assert count(session, User) == 1

    row, created = writes.upsert_rating(session, 10, 1, 4.0, at(60))
    session.commit()

    assert not created and row == RatingRow(10, 1, 4.0, at(60))
    assert repo.user_ratings(session, 10, limit=10).items == [RatingRow(10, 1, 4.0, at(60))]
    assert count(session, Rating) == 1


def test_upsert_of_an_unknown_movie_writes_nothing(session: Session) -> None:
    with pytest.raises(UnknownMovie) as error:
        writes.upsert_rating(session, 10, 999, 3.0, at(0))
    assert error.value.movie_ids == [999]
    assert count(session, User) == 0 and count(session, Rating) == 0


def test_batch_counts_new_and_replaced_last_row_wins(session: Session) -> None:
    writes.upsert_rating(session, 10, 1, 1.0, at(0))
    rows = [
        RatingRow(10, 1, 2.0, at(1)),
        RatingRow(10, 2, 3.0, at(1)),
        RatingRow(11, 2, 4.0, at(1)),
        RatingRow(11, 2, 4.5, at(2)),
    ]
    assert writes.upsert_ratings(session, rows) == writes.BatchResult(inserted=2, updated=1)
    assert repo.user_ratings(session, 11, limit=5).items == [RatingRow(11, 2, 4.5, at(2))]


def test_batch_with_an_unknown_movie_is_refused_whole(session: Session) -> None:
    rows = [RatingRow(10, 1, 2.0, at(1)), RatingRow(10, 998, 3.0, at(1)), RatingRow(10, 999, 3.0, at(1))]
    with pytest.raises(UnknownMovie) as error:
        writes.upsert_ratings(session, rows)
    assert error.value.movie_ids == [998, 999]
    assert count(session, Rating) == 0 and count(session, User) == 0


def test_delete(session: Session) -> None:
    writes.upsert_rating(session, 10, 1, 3.0, at(0))
    assert writes.delete_rating(session, 10, 1) is True
    assert writes.delete_rating(session, 10, 1) is False
    assert repo.count_ratings(session) == 0


def test_user_ratings_pages_newest_first(session: Session) -> None:
    for movie_id in range(1, 6):
        writes.upsert_rating(session, 10, movie_id, 3.0, at(movie_id))
    writes.upsert_rating(session, 11, 6, 3.0, at(100))

    pages = [repo.user_ratings(session, 10, limit=2, offset=offset) for offset in (0, 2, 4, 6)]

    assert [[row.movie_id for row in page.items] for page in pages] == [[5, 4], [3, 2], [1], []]
    assert {page.total for page in pages} == {5}
    assert repo.rated_movie_ids(session, 10) == [1, 2, 3, 4, 5]
    assert repo.user_ratings(session, 12, limit=2) == repo.Page(items=[], total=0)


def test_user_rating_arrays(session: Session) -> None:
    writes.upsert_rating(session, 10, 3, 4.5, at(0))
    writes.upsert_rating(session, 10, 1, 2.0, at(0))
    movie_ids, ratings = repo.user_rating_arrays(session, 10)
    assert movie_ids.dtype == np.int64 and ratings.dtype == np.float32
    assert movie_ids.tolist() == [1, 3] and ratings.tolist() == [2.0, 4.5]
    empty_ids, empty_ratings = repo.user_rating_arrays(session, 99)
    assert empty_ids.shape == (0,) and empty_ratings.dtype == np.float32


def test_movie_lookups(session: Session) -> None:
    assert repo.get_movie(session, 6) == repo.MovieRow(6, "東京物語 (1953)", None, ["Drama"])
    assert repo.get_movie(session, 7) is None
    assert repo.movie_titles(session, [2, 7]) == {2: "Amélie (2001)"}
    many = list(range(-5, 12_000))
    assert repo.movies_exist(session, many) == set(CATALOG)
    assert len(repo.movie_titles(session, many)) == len(CATALOG)


def test_create_movie_twice_is_refused(session: Session) -> None:
    with pytest.raises(MovieExists):
        repo.create_movie(session, 1, "Another", None, [])
    assert repo.get_movie(session, 1).title == "Toy Story (1995)"
    with pytest.raises(ValueError, match="genre"):
        repo.create_movie(session, 7, "Split", None, ["Drama|Comedy"])
    assert repo.get_movie(session, 7) is None


SEARCHES = [
    ("amé", None, [2]),
    ("AMÉLIE", None, [2]),
    ("école", None, [3]),
    ("東京", None, [6]),
    ("%", None, [5]),
    ("_", None, [5]),
    ("y_s", None, []),
    ("'); DROP TABLE movies;--", None, [4]),
    ("' OR '1'='1", None, []),
    (None, "Drama", [3, 4, 6]),
    (None, "drama", [3, 4, 6]),
    (None, "Dram", []),
    (None, "Comedy|Romance", []),
    (None, "%", []),
    ("o", "Comedy", [1, 4]),
    (None, None, [1, 2, 3, 4, 5, 6]),
]


def test_search_is_literal_case_insensitive_and_unicode(session: Session) -> None:
    found = {
        (search, genre): [movie.id for movie in repo.search_movies(session, search, genre, limit=50).items]
        for search, genre, _ in SEARCHES
    }
    assert found == {(search, genre): expected for search, genre, expected in SEARCHES}
    assert repo.search_movies(session, "amé", None).total == 1
    assert count(session, Movie) == len(CATALOG)


def test_search_pages(session: Session) -> None:
    page = repo.search_movies(session, limit=2, offset=2)
    assert [movie.id for movie in page.items] == [3, 4] and page.total == len(CATALOG)


def test_rating_stats_and_count(session: Session) -> None:
    writes.upsert_ratings(
        session,
        [RatingRow(10, 2, 4.0, at(0)), RatingRow(11, 2, 5.0, at(0)), RatingRow(10, 1, 1.0, at(0))],
    )
    stats = repo.movie_rating_stats(session)
    assert stats.movie_ids.tolist() == [1, 2]
    assert stats.counts.tolist() == [1, 2]
    assert stats.means.dtype == np.float32 and stats.means.tolist() == [1.0, 4.5]
    assert repo.count_ratings(session) == 3
    repo.ping(session)


def test_check_constraint_rejects_off_scale_values(session: Session) -> None:
    session.execute(insert(User).values(id=10))
    for value in (0.0, 5.5, 2.25, -1.0, 1e30, float("nan")):
        with pytest.raises(IntegrityError), session.begin_nested():
            session.execute(insert(Rating).values(user_id=10, movie_id=1, rating=value, rated_at=0))
    assert repo.count_ratings(session) == 0


def test_check_constraint_accepts_the_scale(session: Session) -> None:
    session.execute(insert(User).values(id=10))
    for movie_id, value in zip(CATALOG, [0.5, 1.0, 2.5, 4.5, 5.0], strict=False):
        session.execute(insert(Rating).values(user_id=10, movie_id=movie_id, rating=value, rated_at=0))
    assert repo.count_ratings(session) == 5


def test_concurrent_upserts_of_one_pair_leave_one_row(engine: Engine, session: Session) -> None:
    factory = make_session_factory(engine)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for step in range(10):
                with factory() as own, write_transaction(own):
                    writes.upsert_rating(own, 10, 1, 0.5 + (worker + step) % 10 * 0.5, at(step))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert repo.count_ratings(session) == 1 and count(session, User) == 1
