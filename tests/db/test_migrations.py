"""The Alembic history builds exactly the models' schema, both ways, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from app.db.models import Base
from app.db.schema import (
    SchemaOutOfDate,
    check_schema_current,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from app.db.session import make_engine

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES = {"movies", "users", "ratings"}


def schema_diff(engine: Engine) -> list:
    """What autogenerate would change to make the database match the models."""
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_empty_head_base_head(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert tables(engine) == set()
        upgrade(database_url)
        assert tables(engine) == TABLES
        downgrade(database_url)
        assert tables(engine) == set()
        upgrade(database_url)
        assert tables(engine) == TABLES
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_autogenerate_finds_no_difference(engine: Engine) -> None:
    assert schema_diff(engine) == []


def test_named_constraints_and_indexes(engine: Engine) -> None:
    inspector = inspect(engine)
    assert inspector.get_pk_constraint("ratings")["constrained_columns"] == ["user_id", "movie_id"]
    assert {ix["name"] for ix in inspector.get_indexes("ratings")} == {"ix_ratings_movie_id"}
    foreign_keys = {fk["name"] for fk in inspector.get_foreign_keys("ratings")}
    assert foreign_keys == {"fk_ratings_user_id_users", "fk_ratings_movie_id_movies"}
    checks = {ck["name"] for ck in inspector.get_check_constraints("ratings")}
    assert checks == {"ck_ratings_rating_on_scale"}


def test_check_schema_current_names_the_command(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="dotrec db upgrade"):
            check_schema_current(engine)
        upgrade(database_url)
        check_schema_current(engine)
        downgrade(database_url)
        with pytest.raises(SchemaOutOfDate, match="dotrec db upgrade"):
            check_schema_current(engine)
    finally:
        engine.dispose()


def test_alembic_command_line_from_repo_root(database_url: str) -> None:
    alembic = Path(sys.executable).with_name("alembic")
    done = subprocess.run(
        [str(alembic), "-x", f"url={database_url}", "upgrade", "head"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
        assert schema_diff(engine) == []
    finally:
        engine.dispose()
