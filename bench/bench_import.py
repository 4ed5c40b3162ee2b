"""Benchmark: import and export of ML-1M-sized ratings on SQLite and PostgreSQL.

Generates a synthetic set shaped like MovieLens 1M (`app.data.synth`, 1,000,209 ratings),
imports it into a fresh SQLite file and a fresh PostgreSQL database, re-imports it (nothing
changes) and exports each database back to training arrays. On PostgreSQL each run first times
the server's raw binary COPY of the same rows into a bare table (no keys, no indexes) of the
same fresh database, as the reference the import is compared with under the same load. When the
shared data folder has the real `ml-1m-part1` it is measured too. Each figure is the best of
`--repeat` runs, each on a fresh database. Prints a Markdown table and writes it to
`bench/results/import.md`.

    python -m bench.bench_import [--repeat 3] [--pg-url postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from app.config import Settings
from app.data.movielens import RatingsSet, read_ratings_set
from app.data.synth import PRESETS, write_synthetic
from app.db.export import export_training_set
from app.db.import_postgresql import PG_BULK_LOAD_MEMORY, PG_COPY_HEADER, PG_COPY_TRAILER, pg_binary_rows
from app.db.importer import import_ratings_set
from app.db.schema import upgrade
from app.db.session import make_engine
from bench.common import shared_archive

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "import.md"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FreshDatabase = Callable[[], AbstractContextManager[str]]
"""Makes a context that gives the URL of an empty database and removes it afterwards."""
BARE_COPY = "COPY bare_ratings FROM STDIN (FORMAT BINARY)"
BARE_TABLE = "CREATE TABLE bare_ratings (user_id bigint, movie_id bigint, rating real, rated_at bigint)"
BARE_KEYS = (
    f"SET maintenance_work_mem = '{PG_BULK_LOAD_MEMORY}'",
    "ALTER TABLE bare_ratings ADD PRIMARY KEY (user_id, movie_id)",
    "CREATE INDEX ON bare_ratings (movie_id)",
)


@dataclass(frozen=True)
class Timing:
    """Best seconds of each step for one data set on one database."""

    data: str
    database: str
    rows: int
    import_s: float
    reimport_s: float
    export_s: float
    raw_copy_s: float | None
    keyed_copy_s: float | None


def main() -> None:
    args = parse_args()
    settings = Settings(_env_file=None)
    timings: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="dotrec-bench-") as scratch:
        synthetic = read_ratings_set(write_synthetic(Path(scratch) / "ml-1m-synthetic", *PRESETS["ml-1m"]))
        sets = [("synthetic, ML-1M shape", synthetic)]
        real = shared_archive("ml-1m-part1")
        if real is not None:
            sets.append(("real ml-1m-part1", read_ratings_set(real)))
        databases = {
            "SQLite": sqlite_file(f"sqlite:///{Path(scratch) / 'bench.db'}"),
            "PostgreSQL": pg_database(args.pg_url),
        }
        for label, data in sets:
            for database, fresh in databases.items():
                timings.append(time_database(label, database, data, settings, args.repeat, fresh))
    table = markdown(timings, args.repeat)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table + "\n", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step; the best is kept")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("DOTREC_TEST_PG_URL", DEFAULT_PG_URL),
        help="a PostgreSQL server URL on which scratch databases are created and dropped",
    )
    return parser.parse_args()


def time_database(
    label: str, database: str, data: RatingsSet, settings: Settings, repeat: int, fresh_url: FreshDatabase
) -> Timing:
    """Best raw COPY (PostgreSQL), import, re-import and export seconds over `repeat` databases."""
    runs: list[tuple[float, ...]] = []
    rows = 0
    for _ in range(repeat):
        with fresh_url() as url:
            raw_copy_s, keyed_copy_s = raw_copy_seconds(url, data) if database == "PostgreSQL" else (0.0, 0.0)
            upgrade(url)
            engine = make_engine(url, settings)
            try:
                first = import_ratings_set(engine, data, settings)
                again = import_ratings_set(engine, data, settings)
                assert again.ratings_added == again.ratings_updated == 0, again.summary()
                started = time.perf_counter()
                rows = len(export_training_set(engine))
                export_s = time.perf_counter() - started
                runs.append((first.seconds, again.seconds, export_s, raw_copy_s, keyed_copy_s))
            finally:
                engine.dispose()
    import_s, reimport_s, export_s, raw_copy_s, keyed_copy_s = (min(step) for step in zip(*runs, strict=True))
    if database != "PostgreSQL":
        return Timing(label, database, rows, import_s, reimport_s, export_s, None, None)
    return Timing(label, database, rows, import_s, reimport_s, export_s, raw_copy_s, keyed_copy_s)


def sqlite_file(url: str) -> FreshDatabase:
    """Makes a context giving `url` (a SQLite file) without the file before and after."""

    @contextmanager
    def fresh() -> Iterator[str]:
        path = Path(make_url(url).database or "")
        remove_sqlite_files(path)
        try:
            yield url
        finally:
            remove_sqlite_files(path)

    return fresh


def remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def pg_database(server_url: str) -> FreshDatabase:
    """Makes a context giving the URL of a new database on the server, dropped afterwards."""

    @contextmanager
    def fresh() -> Iterator[str]:
        name = f"dotrec_bench_{secrets.token_hex(4)}"
        with psycopg.connect(libpq(server_url), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with psycopg.connect(libpq(server_url), autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    return fresh


def raw_copy_seconds(url: str, data: RatingsSet) -> tuple[float, float]:
    """Seconds of one binary COPY (and commit) of the rows into a bare table; and of the same COPY
    followed by building the ratings table's primary key and movie index on it (the least a
    keyed, indexed table can cost). The table is dropped afterwards."""
    payload = PG_COPY_HEADER + pg_binary_rows(data.ratings) + PG_COPY_TRAILER
    with psycopg.connect(libpq(url)) as connection:
        connection.execute(BARE_TABLE)
        connection.commit()
        started = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy(BARE_COPY) as copy:
            copy.write(payload)
        connection.commit()
        seconds = time.perf_counter() - started
        keying = time.perf_counter()
        for statement in BARE_KEYS:
            connection.execute(statement)
        connection.commit()
        keyed = seconds + time.perf_counter() - keying
        connection.execute("DROP TABLE bare_ratings")
        connection.commit()
    return seconds, keyed


def libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def markdown(timings: list[Timing], repeat: int) -> str:
    """The results as a Markdown table, PostgreSQL's raw COPY and the ratio to it included."""
    lines = [
        f"Best of {repeat} runs, each on a fresh database; {os.cpu_count()} CPU cores. Import: parsed"
        " frames to committed rows, validation included. Re-import: the same data again (nothing"
        " changes). Export: database to `TrainingSet`. Raw COPY: PostgreSQL's binary COPY of the"
        " same rows into a bare table (no keys, no indexes) in the same fresh database; keyed"
        " COPY: the same, then the ratings table's primary key and movie index built on it.",
        "",
        "| data | database | ratings | import (s) | ratings/s | re-import (s) | export (s)"
        " | raw COPY (s) | import / raw COPY | keyed COPY (s) | import / keyed COPY |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        reference = "n/a" if t.raw_copy_s is None else f"{t.raw_copy_s:.2f}"
        ratio = "n/a" if t.raw_copy_s is None else f"{t.import_s / t.raw_copy_s:.1f}x"
        keyed = "n/a" if t.keyed_copy_s is None else f"{t.keyed_copy_s:.2f}"
        keyed_ratio = "n/a" if t.keyed_copy_s is None else f"{t.import_s / t.keyed_copy_s:.1f}x"
        lines.append(
            f"| {t.data} | {t.database} | {t.rows:,} | {t.import_s:.2f} | {t.rows / t.import_s:,.0f}"
            f" | {t.reimport_s:.2f} | {t.export_s:.2f} | {reference} | {ratio} | {keyed} | {keyed_ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
