"""Benchmark of the REST API against a bare FastAPI endpoint, both served the same way.

Starts two servers on loopback, each one uvicorn worker with the same loop, HTTP implementation
and options (uvloop, httptools, no access log): dotrec (`app.api.main:create_app`) on the given
database and models folder, and `bench/api_bare.py` (async and sync endpoints returning a
constant). Load comes from `wrk` in a second process (else `bench/api_load.py`), with the same
Lua request generator for every target (random ids for dotrec, a fixed path for the bare app),
so the load generator's own cost is the same on both sides. Targets are measured in rounds,
interleaved (bare, predict, recommendations, ...), and each ratio is the median over rounds of
dotrec's requests/s over the bare endpoint's requests/s measured in the same round.

Also measured: POST /predict/matrix (every user x every movie as .npy; 250 users x every movie
as JSON), time from process start to /ready 200, and the server's resident memory.

    dotrec synth /tmp/ml1m --like ml-1m
    DATABASE_URL=sqlite:////tmp/dotrec-bench.db dotrec db upgrade
    DATABASE_URL=sqlite:////tmp/dotrec-bench.db dotrec import /tmp/ml1m
    MODELS_DIR=/tmp/bench-models dotrec train --data /tmp/ml1m --epochs 3
    python bench/bench_api.py --database-url sqlite:////tmp/dotrec-bench.db --models /tmp/bench-models

Prints a Markdown table and writes the figures as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from app.cli.serving import MALLOC_TUNING

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
UVICORN_OPTIONS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]

LUA_RANDOM_IDS = """
local users = {%(users)s}
local movies = {%(movies)s}
math.randomseed(%(seed)d)
request = function()
  local u = users[math.random(#users)]
  local m = movies[math.random(#movies)]
  return wrk.format("GET", string.format("%(template)s", u, m))
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A uvicorn process, its port and how long it took to be ready."""

    def __init__(self, target: list[str], env: dict[str, str], ready_path: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *target, "--port", str(self.port), *UVICORN_OPTIONS],
            env=env,
            cwd=REPO,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
                try:
                    if client.get(ready_path).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - started > 60:
                    raise RuntimeError("server not ready after 60 s")
                time.sleep(0.01)
        self.ready_s = time.perf_counter() - started

    def memory_mb(self) -> dict[str, float]:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        values = {
            key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")
        }
        return {"rss_mb": round(values["VmRSS"], 1), "peak_rss_mb": round(values["VmHWM"], 1)}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def lua_script(folder: Path, name: str, template: str, users: list[int], movies: list[int]) -> Path:
    path = folder / f"{name}.lua"
    path.write_text(
        LUA_RANDOM_IDS
        % {
            "users": ",".join(map(str, users)),
            "movies": ",".join(map(str, movies)),
            "seed": 7,
            "template": template,
        }
    )
    return path


def paths_file(folder: Path, name: str, template: str, users: list[int], movies: list[int]) -> Path:
    rng = np.random.default_rng(7)
    lines = [
        template.replace("%d", str(u), 1).replace("%d", str(m), 1)
        for u, m in zip(rng.choice(users, 20_000), rng.choice(movies, 20_000), strict=True)
    ]
    path = folder / f"{name}.txt"
    path.write_text("\n".join(lines))
    return path


def load(url: str, script: Path, connections: int, seconds: float, use_wrk: bool) -> dict:
    """requests/s and latency percentiles of one load run."""
    if use_wrk:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        return {
            "requests_per_s": rate,
            "p50_ms": _wrk_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
            "p99_ms": _wrk_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
            "errors": int(errors.group(1)) if errors else 0,
        }
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIR / "api_load.py"),
            "--url",
            url,
            "--paths",
            str(script),
            "--connections",
            str(connections),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def _wrk_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def warm_lists(url: str, users: list[int]) -> None:
    """Every model user's list once, as a serving process that has run a while holds them: the
    rounds then measure the steady state, not the first ranking of every user (a miss ranks the
    whole catalogue, ~1 ms, which made the first round of an earlier run 60 % of the third)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for user in users:
            client.get(f"/recommendations/{user}", params={"k": 10}).raise_for_status()


def timed_matrix(url: str, body: dict, accept: str, repeats: int) -> dict:
    times = []
    shape = None
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.post("/predict/matrix", json=body, headers={"Accept": accept})
            content = response.content
            times.append(time.perf_counter() - started)
            response.raise_for_status()
        if accept == "application/x-npy":
            import io

            shape = list(np.load(io.BytesIO(content)).shape)
        else:
            started = time.perf_counter()
            parsed = json.loads(content)
            parse_s = time.perf_counter() - started
            shape = [len(parsed["ratings"]), len(parsed["ratings"][0])]
    result = {
        "shape": shape,
        "bytes": len(content),
        "best_s": round(min(times), 3),
        "median_s": round(statistics.median(times), 3),
    }
    if accept != "application/x-npy":
        result["client_json_parse_s"] = round(parse_s, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--models", type=Path, required=True, help="MODELS_DIR holding the trained model")
    parser.add_argument("--seconds", type=int, default=5, help="length of one load run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "api_results.json")
    args = parser.parse_args()

    use_wrk = shutil.which("wrk") is not None
    work = Path(tempfile.mkdtemp(prefix="dotrec-bench-"))
    # glibc's malloc as `dotrec serve` sets it for its workers (app.cli.serving.return_freed_memory)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "MODELS_DIR": str(args.models),
        **{name: str(value) for name, value in MALLOC_TUNING.items()},
    }
    env.pop("API_KEY", None)
    dotrec = Server(["app.api.main:create_app", "--factory"], env, "/ready", work / "dotrec.log")
    # the same app without its fast routes (app/api/fast_routes.py): what they are worth
    plain = Server(
        ["app.api.main:create_app", "--factory"], env | {"FAST_ROUTES": "false"}, "/ready", work / "plain.log"
    )
    bare = Server(["--app-dir", str(BENCH_DIR), "api_bare:app"], env, "/bare", work / "bare.log")
    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "load_generator": "wrk" if use_wrk else "bench/api_load.py",
        },
        "connections": args.connections,
        "start_to_ready_s": round(dotrec.ready_s, 2),
        "memory_after_start": dotrec.memory_mb(),
    }
    try:
        with httpx.Client(base_url=dotrec.url) as client:
            model = client.get("/model").json()
            ids = client.get("/model/ids").json()
        results["model"] = {k: model[k] for k in ("version", "n_users", "n_movies", "n_factors", "n_ratings")}
        users, movies = ids["user_ids"], ids["movie_ids"]
        make = lua_script if use_wrk else paths_file
        # every script draws the same random ids (the bare ones ignore them: Lua's
        # string.format drops extra arguments), so the load generator works alike for all
        targets = {
            "bare_async": (bare.url, make(work, "bare", "/bare", users, movies)),
            "bare_sync": (bare.url, make(work, "bare_sync", "/bare-sync", users, movies)),
            "predict": (dotrec.url, make(work, "predict", "/predict/%d/%d", users, movies)),
            "recommendations": (dotrec.url, make(work, "recs", "/recommendations/%d?k=10", users, movies)),
            "predict_fastapi_routes": (plain.url, make(work, "predict", "/predict/%d/%d", users, movies)),
            "recommendations_fastapi_routes": (
                plain.url,
                make(work, "recs", "/recommendations/%d?k=10", users, movies),
            ),
            # k drawn from 5..15: 66,440 (user, k) lists, too many for the finished-list cache,
            # so nearly every request filters the user's candidates and builds its items
            "recommendations_varied_k": (
                dotrec.url,
                make(work, "recs_k", "/recommendations/%d?k=%d", users, list(range(5, 16))),
            ),
        }
        for url, script in targets.values():  # warm-up
            load(url, script, args.connections, 1.0, use_wrk)
        for url in (dotrec.url, plain.url):
            warm_lists(url, users)
        rounds: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, script) in targets.items():
                rounds[name].append(load(url, script, args.connections, args.seconds, use_wrk))
        results["load"] = {
            name: {
                "requests_per_s": round(statistics.median(r["requests_per_s"] for r in runs)),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
                "errors": sum(r["errors"] for r in runs),
                "runs_requests_per_s": [round(r["requests_per_s"]) for r in runs],
            }
            for name, runs in rounds.items()
        }
        for name in (
            "predict",
            "recommendations",
            "recommendations_varied_k",
            "predict_fastapi_routes",
            "recommendations_fastapi_routes",
        ):
            ratios = [
                mine["requests_per_s"] / base["requests_per_s"]
                for mine, base in zip(rounds[name], rounds["bare_async"], strict=True)
            ]
            results["load"][name]["ratio_to_bare_async"] = round(statistics.median(ratios), 3)
        results["matrix"] = {
            "all_npy": timed_matrix(dotrec.url, {}, "application/x-npy", 3),
            "250_json": timed_matrix(dotrec.url, {"user_ids": users[:250]}, "application/json", 3),
        }
        results["memory_after_load"] = dotrec.memory_mb()
    finally:
        dotrec.stop()
        plain.stop()
        bare.stop()
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


def markdown(results: dict) -> str:
    load_ = results["load"]
    matrix = results["matrix"]
    rows = [
        "| measure | value | target |",
        "|---|---|---|",
        f"| bare async def, requests/s | {load_['bare_async']['requests_per_s']:,} | (reference) |",
        f"| bare sync def, requests/s | {load_['bare_sync']['requests_per_s']:,} | (reference) |",
        f"| bare async def, p99 | {load_['bare_async']['p99_ms']} ms | (reference) |",
        f"| GET /predict, requests/s | {load_['predict']['requests_per_s']:,} "
        f"({load_['predict']['ratio_to_bare_async']:.0%} of bare) | >= 85% |",
        f"| GET /predict, p99 at {results['connections']} connections | {load_['predict']['p99_ms']} ms "
        "| <= 20 ms |",
        f"| GET /recommendations k=10, requests/s | {load_['recommendations']['requests_per_s']:,} "
        f"({load_['recommendations']['ratio_to_bare_async']:.0%} of bare) | >= 80% |",
        f"| GET /recommendations, p99 | {load_['recommendations']['p99_ms']} ms | |",
        f"| GET /recommendations k=5..15 (finished lists not reused), requests/s | "
        f"{load_['recommendations_varied_k']['requests_per_s']:,} "
        f"({load_['recommendations_varied_k']['ratio_to_bare_async']:.0%} of bare) | |",
        f"| GET /predict through FastAPI's router alone (FAST_ROUTES=false), requests/s | "
        f"{load_['predict_fastapi_routes']['requests_per_s']:,} "
        f"({load_['predict_fastapi_routes']['ratio_to_bare_async']:.0%} of bare) | |",
        f"| GET /recommendations k=10 through FastAPI's router alone, requests/s | "
        f"{load_['recommendations_fastapi_routes']['requests_per_s']:,} "
        f"({load_['recommendations_fastapi_routes']['ratio_to_bare_async']:.0%} of bare) | |",
        f"| POST /predict/matrix {matrix['all_npy']['shape']} .npy | {matrix['all_npy']['median_s']} s "
        f"(best {matrix['all_npy']['best_s']} s, {matrix['all_npy']['bytes'] / 1e6:.1f} MB) | <= 1 s |",
        f"| POST /predict/matrix {matrix['250_json']['shape']} JSON | {matrix['250_json']['median_s']} s "
        f"(best {matrix['250_json']['best_s']} s, {matrix['250_json']['bytes'] / 1e6:.1f} MB; "
        f"client parse {matrix['250_json']['client_json_parse_s']} s) | <= 0.5 s |",
        f"| start to /ready | {results['start_to_ready_s']} s | <= 3 s |",
        f"| resident memory after start / after load / peak | {results['memory_after_start']['rss_mb']} / "
        f"{results['memory_after_load']['rss_mb']} / {results['memory_after_load']['peak_rss_mb']} MB "
        "| aim < 300 MB |",
    ]
    machine = results["machine"]
    notes = (
        f"\nModel {results['model']['version']} ({results['model']['n_users']:,} users x "
        f"{results['model']['n_movies']:,} movies, k={results['model']['n_factors']}); "
        f"{machine['cpus']} CPUs, load average {machine['load_average_at_start']} -> "
        f"{machine['load_average_at_end']}; load from {machine['load_generator']}."
    )
    return "\n".join(rows) + notes


if __name__ == "__main__":
    main()
