"""Benchmark of the service under write load, and of its reads while an import runs.

For each database (SQLite; PostgreSQL when reachable at --pg-url), on a fresh database holding
the synthetic ML-1M-shaped set (`dotrec synth --like ml-1m`: 6,040 users x 3,706 movies,
1,000,209 ratings) and serving a model trained on it, one uvicorn worker as `dotrec serve` runs
it:

- writes: 32 concurrent keep-alive clients post 20,000 ratings (bench/write_load.py: single
  POST /ratings and some POST /ratings/batch, some pairs shared between clients), then the
  database is checked for a lost, duplicated or out-of-order write; reported: ratings/s and
  the statuses answered.
- reads under an import: `wrk` on GET /recommendations/{random user}?k=10 (32 connections) in
  1-second slices, first alone, then while `dotrec import` loads a second synthetic ML-1M set
  (`--seed 1`: 1,000,209 ratings of the same users and movies, mostly new pairs) into the same
  database; reported: requests/s, p50 and p99 (the worst slice's), non-2xx answers, and the
  import's own duration with and without that load.

    python -m bench.bench_reliability --work /tmp/dotrec-reliability

Prints Markdown and writes it to bench/results/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from bench.bench_api import Server, load, lua_script
from bench.common import REPO_ROOT, machine, markdown_table, write_result
from bench.write_load import check_no_write_lost, run_write_load, stored_ratings

DOTREC = str(Path(sys.executable).with_name("dotrec"))
SLICE_S = 1


def dotrec(env: dict[str, str], *args: str) -> float:
    """Run `dotrec ARGS`; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([DOTREC, *args], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """The two synthetic sets and a model trained on the first (made once, reused)."""
    first, second, models = work / "ml1m", work / "ml1m-seed1", work / "models"
    env = {**os.environ, "MODELS_DIR": str(models)}
    for folder, seed in ((first, "0"), (second, "1")):
        if not (folder / "ratings.csv").exists():
            dotrec(env, "synth", str(folder), "--like", "ml-1m", "--seed", seed, "--quiet")
    if not (models / "current").exists():
        dotrec(env, "train", "--data", str(first), "--epochs", "2", "--quiet")
    return first, second, models


def pg_reachable(pg_url: str) -> bool:
    try:
        psycopg.connect(pg_url, connect_timeout=3).close()
        return True
    except psycopg.OperationalError as error:
        print(f"PostgreSQL unreachable ({error}): SQLite only", file=sys.stderr)
        return False


def fresh_database(kind: str, name: str, work: Path, pg_url: str) -> str:
    """The URL of a new, empty database `name` on SQLite (a file in `work`) or PostgreSQL."""
    if kind == "SQLite":
        path = work / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        identifier = sql.Identifier(name)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(identifier))
    return make_url(pg_url).set(drivername="postgresql+psycopg", database=name).render_as_string(False)


def slices(url: str, script: Path, until: subprocess.Popen | None, count: int) -> list[dict]:
    """wrk runs of SLICE_S each: `count` of them, or while `until` runs."""
    runs = []
    while (until is not None and until.poll() is None) or (until is None and len(runs) < count):
        runs.append(load(url, script, 32, SLICE_S, use_wrk=True))
    return runs


def summary(runs: list[dict]) -> dict:
    return {
        "requests_per_s": round(statistics.median(r["requests_per_s"] for r in runs)),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 1),
        "p99_ms": round(max(r["p99_ms"] for r in runs), 1),
        "errors": sum(r["errors"] for r in runs),
        "slices": len(runs),
    }


def measure(kind: str, first: Path, second: Path, models: Path, work: Path, pg_url: str) -> dict:
    def loaded(name: str) -> dict[str, str]:
        """The environment of a fresh database holding the first set."""
        env = {
            **os.environ,
            "DATABASE_URL": fresh_database(kind, name, work, pg_url),
            "MODELS_DIR": str(models),
        }
        env.pop("API_KEY", None)
        dotrec(env, "db", "upgrade")
        dotrec(env, "import", str(first), "--quiet")
        return env

    env = loaded("dotrec_bench_reliability")
    server = Server(["app.api.main:create_app", "--factory"], env, "/ready", work / f"{kind}.log")
    try:
        ids = httpx.get(f"{server.url}/model/ids").json()
        writes = run_write_load(server.url, ids["movie_ids"])
        engine = create_engine(env["DATABASE_URL"])
        check_no_write_lost(writes, stored_ratings(engine, writes.user_ids))
        engine.dispose()

        script = lua_script(
            work, f"recs-{kind}", "/recommendations/%d?k=10", ids["user_ids"], ids["movie_ids"]
        )
        slices(server.url, script, None, 2)  # warm-up
        alone = slices(server.url, script, None, 5)
        started = time.perf_counter()
        importing = subprocess.Popen([DOTREC, "import", str(second), "--quiet"], env=env)
        during = slices(server.url, script, importing, 0)
        import_loaded_s = time.perf_counter() - started
        if importing.returncode != 0:
            raise RuntimeError(f"dotrec import failed on {kind}")
    finally:
        server.stop()
    # the same import into a database in the same state, with nothing else running
    import_alone_s = dotrec(loaded("dotrec_bench_reliability_alone"), "import", str(second), "--quiet")
    return {
        "writes": {
            "ratings": len(writes.writes),
            "seconds": round(writes.seconds, 1),
            "ratings_per_s": round(writes.ratings_per_s),
            "statuses": dict(sorted(writes.statuses.items())),
        },
        "alone": summary(alone),
        "during_import": summary(during),
        "import_loaded_s": round(import_loaded_s, 1),
        "import_alone_s": round(import_alone_s, 1),
    }


def markdown(results: dict[str, dict]) -> str:
    writes = markdown_table(
        ["database", "ratings", "seconds", "ratings/s", "statuses", "lost / duplicated / out of order"],
        [
            [
                name,
                f"{r['writes']['ratings']:,}",
                r["writes"]["seconds"],
                f"{r['writes']['ratings_per_s']:,}",
                ", ".join(f"{status}: {n:,}" for status, n in r["writes"]["statuses"].items()),
                "none (checked)",
            ]
            for name, r in results.items()
        ],
    )
    reads = markdown_table(
        [
            "database",
            "GET /recommendations",
            "requests/s",
            "p50 ms",
            "p99 ms (worst slice)",
            "non-2xx",
            "import s",
        ],
        [
            row
            for name, r in results.items()
            for row in (
                [name, "alone", *_read_cells(r["alone"]), "-"],
                [name, "during the import", *_read_cells(r["during_import"]), r["import_loaded_s"]],
                [name, "(the import with no reads)", "", "", "", "", r["import_alone_s"]],
            )
        ],
    )
    return f"{machine()}\n\n{writes}\n\n{reads}"


def _read_cells(run: dict) -> list[object]:
    return [f"{run['requests_per_s']:,}", run["p50_ms"], run["p99_ms"], run["errors"]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dotrec-reliability"))
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian: apt-get install wrk)")
    args.work.mkdir(parents=True, exist_ok=True)
    first, second, models = prepare(args.work)
    kinds = ["SQLite", "PostgreSQL"] if pg_reachable(args.pg_url) else ["SQLite"]
    results = {kind: measure(kind, first, second, models, args.work, args.pg_url) for kind in kinds}
    write_result("reliability.md", markdown(results))


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
