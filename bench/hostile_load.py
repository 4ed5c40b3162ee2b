"""Issue 15's hostile requests and the probes that watch a server while it answers them, shared by
`bench/bench_hostile.py` (figures) and `tests/api/test_request_costs.py` (limits asserted)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

MB = 1024 * 1024

#: (name, path, body, status due, text the answer must hold)
HOSTILE_BODIES: list[tuple[str, str, Callable[[], bytes], int, str]] = [
    # issue 15, case 1: a few MB of ids that are all invalid
    ("1.3M bad pairs", "/predict/pairs", lambda: b'{"pairs": [' + b"[0,0]," * 1_299_999 + b"[0,0]]}", 413,
     "MAX_PAIRS"),
    ("3.5M bad matrix ids", "/predict/matrix", lambda: b'{"user_ids": [' + b"0," * 3_499_999 + b"0]}", 413,
     "MAX_MATRIX_IDS"),
    ("100k bad pairs under the cap", "/predict/pairs",
     lambda: json.dumps({"pairs": [[0, 0]] * 100_000}).encode(), 422, "greater than 0"),
    ("10k bad batch rows", "/ratings/batch",
     lambda: json.dumps({"ratings": [{"user_id": 0, "movie_id": 0, "rating": "x"}] * 10_000}).encode(), 422,
     "more errors not shown"),
    # case 2: a valid matrix of many rows
    ("2M matrix rows", "/predict/matrix",
     lambda: b'{"movie_ids": [1], "user_ids": [' + b"1," * 1_999_999 + b"1]}", 413, "MAX_MATRIX_IDS"),
]  # fmt: skip

#: case 2 within the caps: the largest valid matrix (as .npy), sent by several clients at once
LARGEST_VALID_MATRIX = json.dumps({"user_ids": [1] * 100_000, "movie_ids": [1, 2, 3]}).encode()


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of process `pid` now and at its peak (VmRSS, VmHWM), MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}


def post_raw(url: str, path: str, body: bytes, accept: str = "application/json") -> httpx.Response:
    headers = {"Content-Type": "application/json", "Accept": accept}
    return httpx.post(f"{url}{path}", content=body, headers=headers, timeout=60)


class HealthWatch:
    """GET /health every 20 ms on a connection of its own, keeping the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest_s = 0.0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get("/health").status_code
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    status = 0
                self.slowest_s = max(self.slowest_s, time.perf_counter() - started)
                if status != 200:
                    self.failures.append(f"status {status}")
                time.sleep(0.02)

    @contextmanager
    def watching(self) -> Iterator[HealthWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)
