"""A real `dotrec serve` process for the tests that need one (end to end, load, faults)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

DOTREC = str(Path(sys.executable).with_name("dotrec"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_dotrec(env: dict[str, str], *args: str) -> str:
    """Run `dotrec ARGS` to completion; its output, or AssertionError with it on failure."""
    done = subprocess.run([DOTREC, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dotrec {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


class LiveServer:
    """`dotrec serve` on a free port (another, should that one be taken meanwhile), started
    and waited for until `wait_for` answers 200; `client` talks to it."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, wait_for: str = "/ready", serve_args: tuple[str, ...] = ()
    ) -> None:
        self.env = env
        for _attempt in range(3):
            self.port = free_port()
            self.log = log_dir / f"serve-{self.port}.log"
            with self.log.open("w") as out:
                self.process = subprocess.Popen(
                    [DOTREC, "serve", "--port", str(self.port), "--log-level", "info", *serve_args],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            self.url = f"http://127.0.0.1:{self.port}"
            self.client = httpx.Client(base_url=self.url, timeout=30)
            if self._wait(wait_for):
                return
            if "address already in use" not in self.log.read_text().lower():
                break
        raise AssertionError(f"dotrec serve exited:\n{self.log.read_text()}")

    def _wait(self, path: str, seconds: float = 60) -> bool:
        deadline = time.monotonic() + seconds
        while self.process.poll() is None:
            try:
                if self.client.get(path).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{path} never answered 200:\n{self.log.read_text()}"
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        print(f"--- {self.log.name}\n{self.log.read_text()[-4000:]}")
