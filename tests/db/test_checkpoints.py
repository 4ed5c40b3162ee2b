"""SQLite WAL checkpoints: the serving engine's commits leave them to a background thread."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine

from app.config import Settings
from app.db.checkpoints import WalCheckpoints
from app.db.session import make_engine

PAGES = 2_000
"""Pages one transaction logs here: past SQLite's default checkpoint threshold of 1,000."""


def _engine(path: Path, serving: bool) -> Engine:
    engine = make_engine(f"sqlite:///{path}", Settings(_env_file=None), serving=serving)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE pages (body BLOB NOT NULL)")
    return engine


def _write_pages(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO pages (body) SELECT randomblob(4000) FROM n",
            (PAGES,),
        )


def _checkpointed(path: Path) -> bool:
    """Whether the pages reached the database file itself (a checkpoint copied them there)."""
    return path.stat().st_size > PAGES * 4000


def test_an_ordinary_engine_checkpoints_in_the_commit(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "db.sqlite", serving=False)
    _write_pages(engine)
    assert _checkpointed(tmp_path / "db.sqlite")
    engine.dispose()


def test_the_serving_engine_leaves_checkpoints_to_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = _engine(path, serving=True)
    _write_pages(engine)
    assert not _checkpointed(path)  # the commit did not copy its pages
    with engine.connect() as connection:  # and every row is there, read through the log
        assert connection.exec_driver_sql("SELECT count(*) FROM pages").scalar() == PAGES
    checkpoints = WalCheckpoints(engine, interval_s=0.05)
    checkpoints.start()
    deadline = time.monotonic() + 10
    while not _checkpointed(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    checkpoints.close()
    assert _checkpointed(path) and checkpoints.checkpoints >= 1
    engine.dispose()


def test_closing_runs_a_last_checkpoint_at_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = _engine(path, serving=True)
    checkpoints = WalCheckpoints(engine, interval_s=3600)
    checkpoints.start()
    _write_pages(engine)
    started = time.monotonic()
    checkpoints.close()
    assert time.monotonic() - started < 30  # not the hour's wait
    assert _checkpointed(path) and checkpoints.checkpoints == 1
    engine.dispose()
