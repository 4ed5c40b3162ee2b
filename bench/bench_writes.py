"""Writes against their floor: POST /ratings and POST /ratings/batch on SQLite and PostgreSQL,
beside a bare FastAPI endpoint parsing the same request body, all served the same way.

    python -m bench.bench_writes                 # writes bench/results/writes.{md,json}
    python -m bench.bench_writes --seconds 5 --rounds 3

Each database gets the catalog of a MovieLens-shaped synthetic set (`dotrec synth --like
ml-100k`, imported; no model is needed to write). Load: wrk, 32 connections, one worker per
server; every request rates a random movie for a random user of a million (so most are new
pairs, some replace one), built by the same Lua script for every target (the bare endpoint
parses and validates the very same bodies). Rounds are interleaved (bare, SQLite, PostgreSQL,
...); a ratio is the median over rounds of a target's requests/s over the bare endpoint's in
the same round. Then POST /ratings/batch: 30 batches of 1,000 new ratings each from one client,
then from each of 4 clients at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psycopg

from bench.bench_api import BENCH_DIR, Server, load
from bench.common import REPO_ROOT, machine, markdown_table, write_result

LUA_POSTS = """
math.randomseed(%(seed)d)
local movies = {%(movies)s}
request = function()
  local body = string.format('{"user_id": %%d, "movie_id": %%d, "rating": %%.1f}',
    math.random(1, 1000000), movies[math.random(#movies)], math.random(1, 10) / 2)
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, body)
end
"""
PG_ADMIN = os.environ.get("DOTREC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH_CLIENTS = (1, 4)


def dotrec(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, check=True, cwd=REPO_ROOT, capture_output=True
    )


def post_script(folder: Path, name: str, path: str, movies: list[int]) -> Path:
    script = folder / f"{name}.lua"
    script.write_text(LUA_POSTS % {"seed": 11, "movies": ",".join(map(str, movies)), "path": path})
    return script


def batch_rate(url: str, movies: list[int], clients: int, batches: int = 30, size: int = 1000) -> dict:
    """ratings/s of POST /ratings/batch: `clients` clients, each sending `batches` batches of
    `size` new ratings one after another (new users: ids no earlier run used)."""
    rng = np.random.default_rng(3 + clients)
    first_user = 2_000_000 + clients * 1_000_000

    def body(b: int) -> str:
        ratings = [
            {"user_id": int(first_user + b * size + i), "movie_id": int(m), "rating": 4.0}
            for i, m in enumerate(rng.choice(movies, size))
        ]
        return json.dumps({"ratings": ratings})

    bodies = [[body(c * batches + b) for b in range(batches)] for c in range(clients)]
    headers = {"Content-Type": "application/json"}

    def send(own: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            for content in own:
                client.post("/ratings/batch", content=content).raise_for_status()

    send([body(clients * batches)])  # warm
    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        list(pool.map(send, bodies))
        seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "ratings_per_s": round(clients * batches * size / seconds),
        "batch_s": round(seconds / batches, 4),
    }


def postgres_database() -> str:
    name = f"dotrec_bench_writes_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sqlite-synchronous", default=None, help="SQLITE_SYNCHRONOUS for the SQLite server")
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_writes needs wrk (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="dotrec-writes-"))
    synth = work / "synth"
    base_env = {**os.environ, "MODELS_DIR": str(work / "models"), "DATA_DIR": str(work / "data")}
    base_env.pop("API_KEY", None)
    dotrec(base_env, "synth", str(synth), "--like", "ml-100k", "--quiet")
    databases = {"sqlite": f"sqlite:///{work / 'writes.db'}", "postgresql": postgres_database()}
    servers: dict[str, Server] = {}
    try:
        for name, url in databases.items():
            env = base_env | {"DATABASE_URL": url}
            if name == "sqlite" and arguments.sqlite_synchronous:
                env["SQLITE_SYNCHRONOUS"] = arguments.sqlite_synchronous
            dotrec(env, "db", "upgrade")
            dotrec(env, "import", str(synth), "--quiet")
            servers[name] = Server(
                ["app.api.main:create_app", "--factory"], env, "/health", work / f"{name}.log"
            )
        servers["bare"] = Server(
            ["--app-dir", str(BENCH_DIR), "api_bare:app"], base_env, "/bare", work / "bare.log"
        )
        movies = list(range(1, 1683))
        targets = {
            "bare_post": (servers["bare"].url, post_script(work, "bare", "/bare-post", movies)),
            **{
                f"ratings_{name}": (servers[name].url, post_script(work, name, "/ratings", movies))
                for name in databases
            },
        }
        for url, script in targets.values():
            load(url, script, arguments.connections, 1.0, True)  # warm-up
        rounds: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(arguments.rounds):
            for name, (url, script) in targets.items():
                rounds[name].append(load(url, script, arguments.connections, arguments.seconds, True))
        results: dict = {
            "machine": machine(),
            "connections": arguments.connections,
            "sqlite_synchronous": arguments.sqlite_synchronous or "default",
            "load": {},
        }
        for name, runs in rounds.items():
            results["load"][name] = {
                "requests_per_s": round(statistics.median(r["requests_per_s"] for r in runs)),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
                "errors": sum(r["errors"] for r in runs),
                "runs": [round(r["requests_per_s"]) for r in runs],
            }
            if name != "bare_post":
                ratios = [
                    m["requests_per_s"] / b["requests_per_s"]
                    for m, b in zip(runs, rounds["bare_post"], strict=True)
                ]
                results["load"][name]["ratio_to_bare"] = round(statistics.median(ratios), 3)
        results["batch"] = {
            name: [batch_rate(servers[name].url, movies, clients) for clients in BATCH_CLIENTS]
            for name in databases
        }
    finally:
        for server in servers.values():
            server.stop()
    text = markdown(results)
    print(text)
    write_result("writes", text)
    (REPO_ROOT / "bench" / "results" / "writes.json").write_text(json.dumps(results, indent=1))


def markdown(results: dict) -> str:
    load_ = results["load"]
    bare = load_["bare_post"]
    rows = [
        [
            "bare POST (the same body, parsed and validated)",
            f"{bare['requests_per_s']:,}",
            "",
            f"{bare['p99_ms']}",
            "",
        ]
    ]
    for name in ("sqlite", "postgresql"):
        entry = load_[f"ratings_{name}"]
        rows.append(
            [
                f"POST /ratings, {name}",
                f"{entry['requests_per_s']:,}",
                f"{entry['ratio_to_bare']:.0%}",
                f"{entry['p99_ms']}",
                str(entry["errors"]),
            ]
        )
    for name, runs in results["batch"].items():
        for batch in runs:
            rows.append(
                [
                    f"POST /ratings/batch of 1,000, {name}, {batch['clients']} client(s)",
                    f"{batch['ratings_per_s']:,} ratings/s",
                    "",
                    "",
                    "",
                ]
            )
    table = markdown_table(["measure", "requests/s", "of bare", "p99 ms", "non-2xx"], rows)
    return (
        f"{table}\n\n{results['connections']} connections; SQLite synchronous: "
        f"{results['sqlite_synchronous']}; {results['machine']}."
    )


if __name__ == "__main__":
    main()
