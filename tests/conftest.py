"""Fixtures shared by every test folder: where the real MovieLens archives are, if anywhere,
and fresh databases (SQLite and PostgreSQL) for anything that stores ratings."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from app.db.schema import upgrade
from app.db.session import make_engine
from tests.requirements import missing

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """`DOTREC_SHARED_DATA`, else `../shared/data` beside the checkout, when it exists."""
    candidate = Path(os.environ.get("DOTREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None


def find_shared_archive(name: str) -> Path | None:
    """The real archive `name` (e.g. "ml-100k") from the shared data folder, or None."""
    folder = shared_data_dir()
    if folder is None:
        return None
    path = folder / f"{name}.tar.gz"
    return path if path.exists() else None


@pytest.fixture(scope="session")
def shared_archive() -> Callable[[str], Path | None]:
    """`find_shared_archive`, for tests that look for a real archive by name."""
    return find_shared_archive


@pytest.fixture(scope="session")
def ml100k_archive() -> Path | None:
    return find_shared_archive("ml-100k")


# --- databases ------------------------------------------------------------------------------------

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq takes it (no "+driver")."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A URL of the test PostgreSQL server (`DOTREC_TEST_PG_URL`, else 127.0.0.1:5432 as postgres)
    on which test databases are created; skips when it is unreachable, fails instead in CI."""
    url = os.environ.get("DOTREC_TEST_PG_URL", DEFAULT_PG_ADMIN_URL)
    try:
        psycopg.connect(_libpq_url(url), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        message = f"PostgreSQL unreachable at {make_url(url)!r}: {error}"
        missing(message)
    return url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database: a SQLite file in tmp_path, or a PostgreSQL database
    `dotrec_test_<random>` created for the test and dropped after it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dotrec.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"dotrec_test_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_url(admin_url), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq_url(admin_url), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a new database migrated to the newest schema."""
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
