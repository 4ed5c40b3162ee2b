"""A Docker engine for the compose test: the Debian packages it needs installed when missing
(docker.io, docker-compose, debootstrap), dockerd started when nothing answers and stopped again
by whoever started it, and the compose command lines there are (`docker-compose` 1.29, the
`docker compose` v2 plugin). Each failure says what is missing and why, for `missing()`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
"""The command each Debian package brings."""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_TIMEOUT_S = 900
ENGINE_START_TIMEOUT_S = 90


class EngineUnavailable(RuntimeError):
    """The engine cannot be had here; the message says why."""


def which(command: str) -> str | None:
    """`command` on the PATH, or in the system folders (dockerd and debootstrap are in sbin)."""
    return shutil.which(command) or shutil.which(command, path=SYSTEM_PATH)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_packages() -> list[str]:
    """Install the Debian packages whose commands are missing (as root, with apt-get); the list of
    packages installed. Raises EngineUnavailable when that cannot be done."""
    needed = [package for command, package in PACKAGES.items() if which(command) is None]
    if not needed:
        return []
    if os.geteuid() != 0:
        raise EngineUnavailable(f"{', '.join(needed)} not installed, and not root to apt-get install them")
    if which("apt-get") is None:
        raise EngineUnavailable(f"{', '.join(needed)} not installed, and no apt-get here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *needed],
    ):
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise EngineUnavailable(f"`{' '.join(argv)}` did not finish in {APT_TIMEOUT_S} s") from error
        if done.returncode != 0:
            raise EngineUnavailable(f"`{' '.join(argv)}` failed:\n{_tail(done.stdout + done.stderr)}")
    still = [package for command, package in PACKAGES.items() if which(command) is None]
    if still:
        raise EngineUnavailable(f"apt-get installed {needed} but these commands are still missing: {still}")
    return needed


def engine_answers(docker: str) -> bool:
    try:
        probe = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and bool(probe.stdout.strip())


@dataclass
class Engine:
    docker: str
    """The docker CLI."""
    log: Path
    started: subprocess.Popen[bytes] | None = None
    """The dockerd this process started, None when one was running already."""
    installed: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the dockerd this process started (its containers stop with it); nothing else."""
        if self.started is None or self.started.poll() is not None:
            return
        self.started.terminate()
        try:
            self.started.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait()


def bring_up(log: Path) -> Engine:
    """An engine that answers: the packages installed when missing, dockerd started when none
    answers. Raises EngineUnavailable with the reason (dockerd's own last lines included)."""
    installed = ensure_packages()
    docker = which("docker")
    if docker is None:
        raise EngineUnavailable("docker.io is installed but there is no docker command")
    engine = Engine(docker=docker, log=log, installed=installed)
    if engine_answers(docker):
        return engine
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine answers, and not root to start dockerd")
    dockerd = which("dockerd")
    assert dockerd is not None  # ensure_packages saw to it
    pidfile = Path("/var/run/docker.pid")
    if pidfile.exists() and not _alive(pidfile):
        pidfile.unlink()  # left by a dockerd that was killed: dockerd refuses to start beside it
    with log.open("wb") as out:
        engine.started = subprocess.Popen(
            [dockerd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if engine.started.poll() is not None:
            output = _tail(log.read_text(errors="replace"))
            raise EngineUnavailable(f"dockerd exited {engine.started.returncode} on start:\n{output}")
        if engine_answers(docker):
            return engine
        time.sleep(0.5)
    engine.stop()
    raise EngineUnavailable(
        f"dockerd did not answer within {ENGINE_START_TIMEOUT_S} s:\n{_tail(log.read_text(errors='replace'))}"
    )


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def compose_v1() -> list[str] | None:
    """`docker-compose` (1.x, Debian's package) when it is here."""
    found = which("docker-compose")
    return [found] if found else None


def compose_v2(docker: str) -> list[str] | None:
    """`docker compose` when the v2 plugin is installed for this docker CLI."""
    try:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    return [docker, "compose"] if probe.returncode == 0 else None
