"""The compose stack played without Docker: the services of docker-compose.yml run in the order its
depends_on gives (migrate, train, api), each with its own command and its environment as compose
resolves it (.env.example as the .env file), against a fresh database on the local PostgreSQL
standing in for the db service. Volumes become folders, `dotrec` and `python` come from this
virtual environment as they come from /opt/venv in the image. Then the things a user does with
the stack: the image's and the db service's health checks, /ready and a recommendation;
`docker compose run train` (a new version, no second import) and /admin/reload;
`TRAIN_MODE=if-missing`; `docker compose up` again (migrate again).

What differs from the containers, and only this: the api listens on 127.0.0.1 and a free port
(compose would map the container's 0.0.0.0:8000), and training runs 2 epochs (TRAIN_ARGS) to be
quick."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_support import (
    COMPOSE_ONLY_VARIABLES,
    DOCKERFILE,
    DOTREC_SERVICES,
    ENV_EXAMPLE,
    REPO_ROOT,
    depends_on,
    interpolate_tree,
    load_compose,
    parse_dockerfile,
    read_env_file,
    referenced_variables,
    service_argv,
    service_environment,
    start_order,
    volume_mounts,
)
from sqlalchemy.engine import make_url

from app.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

VENV_BIN = Path(sys.executable).parent
STEP_TIMEOUT_S = 300
API_START_TIMEOUT_S = 90


class Stack:
    """The compose services as native processes: folders for volumes, a PATH for the image's."""

    def __init__(self, project_env: Mapping[str, str], root: Path) -> None:
        self.project_env = dict(project_env)
        self.compose = interpolate_tree(load_compose(), self.project_env)
        self.services: dict[str, dict[str, Any]] = self.compose["services"]
        self.root = root
        self.workdir = root / "app"  # the image's WORKDIR: no .env there
        self.workdir.mkdir()
        self.logs = root / "logs"
        self.logs.mkdir()
        self.runs = 0

    def host_path(self, source: str) -> Path:
        """Where a volume's source lives here: named volumes under root/volumes, bind mounts as given."""
        if source.startswith((".", "/")):
            return (REPO_ROOT / source).resolve()
        path = self.root / "volumes" / source
        path.mkdir(parents=True, exist_ok=True)
        return path

    def environment(self, name: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The service's environment with container paths under its mounts moved to their
        folders here, on top of this process's environment less anything dotrec or the compose
        file reads (so nothing from the developer's shell leaks in)."""
        service = self.services[name]
        declared = service_environment(service, self.project_env)
        declared.update(overrides or {})
        mounts = volume_mounts(service)
        for key, value in declared.items():
            for target, (source, _) in sorted(mounts.items(), key=lambda item: -len(item[0])):
                if value == target or value.startswith(target + "/"):
                    declared[key] = str(self.host_path(source)) + value[len(target) :]
                    break
        read_by_stack = {n.upper() for n in Settings.model_fields} | referenced_variables(load_compose())
        base = {k: v for k, v in os.environ.items() if k not in read_by_stack | COMPOSE_ONLY_VARIABLES}
        base["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**base, **declared}

    def run(self, name: str, overrides: Mapping[str, str] | None = None) -> str:
        """Run a one-shot service to the end (`docker compose run NAME`); its output."""
        self.runs += 1
        log = self.logs / f"{self.runs:02d}-{name}.log"
        with log.open("w") as out:
            result = subprocess.run(
                service_argv(self.services[name]),
                env=self.environment(name, overrides),
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=STEP_TIMEOUT_S,
            )
        output = log.read_text()
        assert result.returncode == 0, f"{name} exited {result.returncode}:\n{output[-4000:]}"
        return output

    def start_api(self, port: int) -> subprocess.Popen[bytes]:
        argv = service_argv(self.services["api"])
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--port") + 1] = str(port)
        log = (self.logs / "api.log").open("w")
        return subprocess.Popen(
            argv, env=self.environment("api"), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )

    def models_dir(self) -> Path:
        return Path(self.environment("api")["MODELS_DIR"])

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.models_dir().iterdir() if p.is_dir() and p.name != "current")

    def current_version(self) -> str:
        return (self.models_dir() / "current").resolve().name


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def data_source(tmp_path: Path, ml100k_archive: Path | None) -> tuple[str, str]:
    """(IMPORT_DIR, DATA_SOURCE): the shared ml-100k archive mounted at /import when it is here,
    else a small generated set (`dotrec synth`)."""
    if ml100k_archive is not None:
        return str(ml100k_archive.parent), f"/import/{ml100k_archive.name}"
    folder = tmp_path / "import"
    subprocess.run(
        [str(VENV_BIN / "dotrec"), "synth", str(folder / "synth"), "--users", "300", "--movies", "400",
         "--ratings", "20000", "--quiet"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(folder), "/import/synth"


@pytest.fixture
def api_process() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(client: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"api exited {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"api not healthy after {API_START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def _image_healthcheck_passes(port: int, env: dict[str, str]) -> None:
    """The Dockerfile's HEALTHCHECK command, run here against the api (on its port here)."""
    healthcheck = next(i for i in parse_dockerfile(DOCKERFILE.read_text()) if i.keyword == "HEALTHCHECK")
    probe = healthcheck.exec_form()
    assert probe is not None
    probe = [part.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/") for part in probe]
    result = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def _db_healthcheck_passes(stack: Stack, database_url: str) -> None:
    """The db service's pg_isready check, run against the PostgreSQL standing in for it."""
    if shutil.which("pg_isready") is None:
        return
    test = stack.services["db"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    url = make_url(database_url)
    command = test[1].replace("-h 127.0.0.1", f"-h {url.host} -p {url.port or 5432}")
    env = {**os.environ, "POSTGRES_USER": url.username or "postgres", "POSTGRES_DB": url.database or ""}
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_compose_stack_serves_recommendations(
    database_url: str,
    tmp_path: Path,
    data_source: tuple[str, str],
    api_process: list[subprocess.Popen[bytes]],
) -> None:
    assert (VENV_BIN / "dotrec").is_file(), f"no dotrec beside {sys.executable}"
    import_dir, source = data_source
    api_key = secrets.token_hex(16)
    url = make_url(database_url)
    project_env = {
        **read_env_file(ENV_EXAMPLE),  # `cp .env.example .env`, then these lines changed:
        # the local PostgreSQL for the db service: DATABASE_URL is built from these
        "POSTGRES_HOST": url.host or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_DB": url.database or "",
        "IMPORT_DIR": import_dir,
        "DATA_SOURCE": source,
        "TRAIN_ARGS": "--epochs 2",
        "API_KEY": api_key,
    }
    stack = Stack(project_env, tmp_path)
    order = start_order(stack.services, list(DOTREC_SERVICES))
    assert order == ["migrate", "train", "api"]
    assert all("db" in depends_on(stack.services[name]) for name in order), "the local PostgreSQL stands in"

    # docker compose up: migrate, then train (imports: the database is empty), then api.
    stack.run("migrate")
    first = stack.run("train")
    assert "ratings added" in first
    assert "validation RMSE" in first
    assert len(stack.versions()) == 1
    version = stack.current_version()

    port = _free_port()
    api = stack.start_api(port)
    api_process.append(api)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        _wait_healthy(client, api, stack.logs / "api.log")
        _image_healthcheck_passes(port, stack.environment("api"))
        _db_healthcheck_passes(stack, database_url)
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["model_version"] == version
        recommended = client.get("/recommendations/1", params={"k": 5})
        assert recommended.status_code == 200, recommended.text
        items = recommended.json()["items"]
        assert len(items) == 5 and all(item["movie_id"] > 0 for item in items)

        # docker compose run train: a new version from the stored ratings, no second import.
        again = stack.run("train")
        assert "not importing (--if-empty)" in again and "ratings added" not in again
        assert len(stack.versions()) == 2
        newer = stack.current_version()
        assert newer != version
        assert client.post("/admin/reload").status_code == 401, "API_KEY from .env reaches the api"
        reload = client.post("/admin/reload", headers={"X-API-Key": api_key})
        assert reload.status_code == 200, reload.text
        # loaded now, or already by the api itself (it follows MODELS_DIR/current, MODEL_POLL_S)
        assert reload.json()["version"] == newer
        assert client.get("/ready").json()["model_version"] == newer
        assert client.get("/recommendations/1").json()["model_version"] == newer

    # TRAIN_MODE=if-missing with a model present: nothing trained.
    skipped = stack.run("train", {"TRAIN_MODE": "if-missing"})
    assert "not training" in skipped
    assert len(stack.versions()) == 2

    # docker compose up again: migrate finds the schema current; the data and models are kept.
    stack.run("migrate")
    assert stack.current_version() == newer
