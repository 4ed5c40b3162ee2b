"""Benchmark: what issue 15's hostile requests cost a real `dotrec serve` now.

Starts `dotrec serve` (its own limits: header timeout, body timeout, header size) on the given
database and models, then sends each hostile request of `bench/hostile_load.py` while GET /health
is polled every 20 ms on a connection of its own; then the largest valid matrix request 16 times
at once; ids of 5,000 digits 100 times; `rated_at` past year 9999; 20 slowloris connections, a
stalled body and 128 MB of headers. For each: the status, the seconds to the answer, the answer's
size, the server's peak resident memory growth and the slowest /health meanwhile.

    python -m bench.bench_hostile --database-url sqlite:////tmp/dotrec-bench.db --models /tmp/bench-models

(the database and models as bench/bench_api.py's docstring makes them). Prints Markdown and
writes it to bench/results/hostile.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.bench_api import free_port
from bench.hostile_load import HOSTILE_BODIES, LARGEST_VALID_MATRIX, MB, HealthWatch, memory_mb, post_raw

RESULTS = Path(__file__).resolve().parent / "results" / "hostile.md"
TIMEOUTS = {"SERVER_HEADER_TIMEOUT_S": "10", "BODY_TIMEOUT_S": "30"}
Row = tuple[str, str, float, int, float, float]
"""(case, statuses, seconds, answer bytes, peak RSS growth MiB, slowest /health s)"""


def serve(database_url: str, models: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "MODELS_DIR": str(models), **TIMEOUTS}
    env.pop("API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"dotrec serve not ready: {log.read_text()[-2000:]}")


def measure(url: str, pid: int, name: str, send: Callable[[], tuple[str, int]]) -> Row:
    before = memory_mb(pid)["VmHWM"]
    with HealthWatch(url).watching() as health:
        started = time.perf_counter()
        statuses, size = send()
        seconds = time.perf_counter() - started
    grown = max(0.0, memory_mb(pid)["VmHWM"] - before)
    return name, statuses, seconds, size, grown, health.slowest_s


def one_body(url: str, path: str, body: bytes) -> Callable[[], tuple[str, int]]:
    def send() -> tuple[str, int]:
        answer = post_raw(url, path, body)
        return str(answer.status_code), len(answer.content)

    return send


def largest_matrices(url: str) -> tuple[str, int]:
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda _: post_raw(url, "/predict/matrix", LARGEST_VALID_MATRIX, "application/x-npy"),
                range(16),
            )
        )
    return counted(a.status_code for a in answers), max(len(a.content) for a in answers)


def long_ids(url: str) -> tuple[str, int]:
    with httpx.Client(base_url=url, timeout=30) as client:
        answers = [client.get("/predict/" + "1" * 5000 + "/1") for _ in range(100)]
    return counted(a.status_code for a in answers), max(len(a.content) for a in answers)


def far_dates(url: str) -> tuple[str, int]:
    rating = {"user_id": 1, "movie_id": 1, "rating": 4.0, "rated_at": "9999-12-31T23:59:59-14:00"}
    with httpx.Client(base_url=url, timeout=30) as client:
        answers = [
            client.post("/ratings", json=rating),
            client.post("/ratings/batch", json={"ratings": [rating]}),
        ]
    return counted(a.status_code for a in answers), max(len(a.content) for a in answers)


def slow_clients(url: str) -> tuple[str, int]:
    port = int(url.rsplit(":", 1)[1])
    statuses = []
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    for connection in sockets:
        connection.settimeout(60)
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.settimeout(60)
    stalled.sendall(
        b"POST /ratings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    huge = socket.create_connection(("127.0.0.1", port))
    huge.settimeout(60)
    try:
        huge.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(128):
            huge.sendall(b"X-Padding: " + b"a" * MB + b"\r\n")
    except OSError:
        pass  # closed by the server while the rest was being sent
    for connection in [*sockets, stalled, huge]:
        head = connection.recv(100)
        statuses.append(int(head.split()[1]) if head else 0)
        connection.close()
    return counted(statuses), 0


def counted(statuses) -> str:
    seen: dict[int, int] = {}
    for status in statuses:
        seen[status] = seen.get(status, 0) + 1
    return ", ".join(
        f"{status} x{count}" if count > 1 else str(status) for status, count in sorted(seen.items())
    )


def markdown(rows: list[Row], database_url: str, rss_start: float, rss_end: float) -> str:
    kind = database_url.split(":", 1)[0].split("+", 1)[0]
    lines = [
        f"`dotrec serve` on {kind}, header timeout {TIMEOUTS['SERVER_HEADER_TIMEOUT_S']} s, body timeout"
        f" {TIMEOUTS['BODY_TIMEOUT_S']} s; resident memory {rss_start:.0f} MiB before the cases,"
        f" {rss_end:.0f} MiB after; {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| case | statuses | seconds | largest answer | peak RSS growth MiB | slowest /health meanwhile |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, statuses, seconds, size, grown, slowest in rows:
        lines.append(
            f"| {name} | {statuses} | {seconds:.2f} | {size:,} B | {grown:.0f} | {slowest * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--models", type=Path, required=True)
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp(prefix="dotrec-hostile-")) / "serve.log"
    process, url = serve(args.database_url, args.models, log)
    try:
        httpx.get(f"{url}/recommendations/1", timeout=10)  # warm
        rss_start = memory_mb(process.pid)["VmRSS"]
        rows = [
            measure(
                url, process.pid, f"{name} ({len(body := make()) / MB:.1f} MB)", one_body(url, path, body)
            )
            for name, path, make, _, _ in HOSTILE_BODIES
        ]
        rows.append(measure(url, process.pid, "largest valid matrix (100,000 x 3, .npy), 16 at once",
                            lambda: largest_matrices(url)))  # fmt: skip
        rows.append(measure(url, process.pid, "ids of 5,000 digits, 100 requests", lambda: long_ids(url)))
        rows.append(
            measure(url, process.pid, "rated_at past year 9999, single and batch", lambda: far_dates(url))
        )
        rows.append(measure(url, process.pid, "20 slowloris headers, a stalled body, 128 MB of headers",
                            lambda: slow_clients(url)))  # fmt: skip
        rss_end = memory_mb(process.pid)["VmRSS"]
    finally:
        process.terminate()
        process.wait(15)
    table = markdown(rows, args.database_url, rss_start, rss_end)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
