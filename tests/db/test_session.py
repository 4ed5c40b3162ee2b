"""Engine settings per dialect: SQLite pragmas and folder, PostgreSQL pool and timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.db.session import make_engine, make_session_factory, normalize_url


def test_engine_settings(database_url: str, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, db_timeout_s=2.5, db_pool_size=3)
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'nested' / 'folder' / 'dotrec.db'}"
    engine = make_engine(database_url, settings)
    try:
        with make_session_factory(engine)() as session:
            if engine.dialect.name == "sqlite":
                pragmas = {
                    name: session.execute(text(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
                }
                assert pragmas == {
                    "journal_mode": "wal",
                    "foreign_keys": 1,
                    "synchronous": 2,  # FULL: an acknowledged write survives a power cut
                    "busy_timeout": 2500,
                }
                normal = make_engine(database_url, Settings(_env_file=None, sqlite_synchronous="NORMAL"))
                with normal.connect() as connection:
                    assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
                normal.dispose()
                assert (tmp_path / "nested" / "folder" / "dotrec.db").exists()
            else:
                assert session.execute(text("SHOW statement_timeout")).scalar() == "2500ms"
                assert engine.pool.size() == 3
                assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_plain_postgresql_urls_use_psycopg(given: str, driver: str) -> None:
    assert normalize_url(given).drivername == driver


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://u@h/db")


def test_sqlite_begin_immediate_takes_the_write_lock_at_once(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, db_timeout_s=0.1)
    engine = make_engine(f"sqlite:///{tmp_path / 'locks.db'}", settings)
    try:
        with engine.begin() as setup:
            setup.execute(text("CREATE TABLE t (x INTEGER)"))
        with engine.connect() as reader, engine.connect() as other:
            with reader.begin():
                reader.execute(text("SELECT count(*) FROM t"))
                with other.begin():
                    other.execute(text("INSERT INTO t VALUES (1)"))
            with reader.execution_options(sqlite_begin="IMMEDIATE").begin():
                reader.execute(text("SELECT count(*) FROM t"))
                with pytest.raises(OperationalError, match="locked"), other.begin():
                    other.execute(text("INSERT INTO t VALUES (2)"))
            with pytest.raises(ValueError, match="sqlite_begin"):
                reader.execution_options(sqlite_begin="LATER").execute(text("SELECT 1"))
    finally:
        engine.dispose()
