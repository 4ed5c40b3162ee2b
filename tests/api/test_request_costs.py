"""What one hostile request costs a real `dotrec serve` (issue 15): on SQLite and PostgreSQL, each
request below is answered as it must be, the server's peak resident memory grows by less than
200 MB over all of them, and GET /health, polled on its own connection meanwhile, never takes
0.5 s or more. The slow-client cases hold connections open the way a slowloris does and check
that the server closes them with the status due, within its deadlines."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from api_support import Data
from live_server import LiveServer, run_dotrec

from bench.hostile_load import HOSTILE_BODIES, LARGEST_VALID_MATRIX, MB, HealthWatch, memory_mb, post_raw

pytestmark = pytest.mark.slow

HEALTH_LIMIT_S = 0.5
RSS_GROWTH_LIMIT_MB = 200
RSS_KEPT_LIMIT_MB = 60  # what the requests freed goes back (app.cli.serving.return_freed_memory)
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2


@pytest.fixture
def server(
    database_url: str, live_server: Callable[..., LiveServer], data: Data, tmp_path: Path
) -> LiveServer:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MODELS_DIR": str(tmp_path / "models"),
        "DATA_DIR": str(tmp_path / "data"),
        "SERVER_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    env.pop("API_KEY", None)
    run_dotrec(env, "db", "upgrade")
    run_dotrec(env, "import", str(data.write_csv(tmp_path / "csv")), "--quiet")
    run_dotrec(env, "train", "--quiet", "--epochs", "2", "--dim", "8")
    return live_server(env, serve_args=("--no-access-log",))


def test_hostile_bodies_cost_little_and_never_stall_the_server(server: LiveServer) -> None:
    pid = server.process.pid
    server.client.get("/recommendations/1")  # warm
    before = memory_mb(pid)["VmRSS"]
    with HealthWatch(server.url).watching() as health:
        for name, path, body, status, message in HOSTILE_BODIES:
            response = post_raw(server.url, path, body())
            assert response.status_code == status, (name, response.text[:300])
            assert message in response.text, (name, response.text[:300])
            assert len(response.content) < 16_000, (name, "the answer is short, whatever was sent")
        # case 2 again: the largest valid matrices, 16 at once (.npy: 100,000 rows each)
        valid = LARGEST_VALID_MATRIX
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda _: post_raw(server.url, "/predict/matrix", valid, "application/x-npy"), range(16)
                )
            )
        assert {a.status_code for a in answers} <= {200, 503}, {a.text[:200] for a in answers}
        assert any(a.status_code == 200 and len(a.content) > 100_000 * 3 * 4 for a in answers)
        # case 4: ids of thousands of digits, a hundred times: 4xx, and no traceback logged
        log_before = server.log.stat().st_size
        for _ in range(100):
            assert server.client.get("/predict/" + "1" * 5000 + "/1").status_code == 422
            assert server.client.get("/recommendations/1", params={"k": "9" * 5000}).status_code == 422
        assert server.log.stat().st_size - log_before < 10_000, "no traceback per request"
    grown = memory_mb(pid)["VmHWM"] - before
    assert grown < RSS_GROWTH_LIMIT_MB, f"peak RSS grew by {grown:.0f} MB"
    kept = memory_mb(pid)["VmRSS"] - before
    assert kept < RSS_KEPT_LIMIT_MB, f"{kept:.0f} MB more resident after the requests than before"
    assert not health.failures and health.slowest_s < HEALTH_LIMIT_S, (health.slowest_s, health.failures[:3])


def open_socket(server: LiveServer) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port))
    connection.settimeout(HEADER_TIMEOUT_S * 5)
    return connection


def test_slow_and_oversized_clients_are_cut_off(server: LiveServer) -> None:
    """Case 5: headers a little at a time, a body that stops, an idle connection, 128 MB of
    headers: each is answered (408, 408, closed, 431) and closed within its deadline."""
    pid = server.process.pid
    before = memory_mb(pid)["VmRSS"]
    with HealthWatch(server.url).watching() as health:
        slow_headers = [open_socket(server) for _ in range(20)]
        for connection in slow_headers:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        stalled_body = open_socket(server)
        stalled_body.sendall(
            b"POST /ratings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"user'
        )
        idle = open_socket(server)
        started = time.monotonic()
        for connection in slow_headers:
            assert connection.recv(100).startswith(b"HTTP/1.1 408"), "slow headers: 408"
        assert stalled_body.recv(100).startswith(b"HTTP/1.1 408"), "a stalled body: 408"
        assert idle.recv(100) == b"", "an idle connection is closed"
        assert time.monotonic() - started < HEADER_TIMEOUT_S + BODY_TIMEOUT_S + 2
        huge = open_socket(server)
        try:
            chunk = b"X-Padding: " + b"a" * MB + b"\r\n"
            huge.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            for _ in range(128):
                huge.sendall(chunk)
        except OSError:
            pass  # the server closed it while the rest was being sent
        assert huge.recv(100).startswith(b"HTTP/1.1 431")
    grown = memory_mb(pid)["VmHWM"] - before
    assert grown < RSS_GROWTH_LIMIT_MB, f"peak RSS grew by {grown:.0f} MB"
    assert not health.failures and health.slowest_s < HEALTH_LIMIT_S, (health.slowest_s, health.failures[:3])
