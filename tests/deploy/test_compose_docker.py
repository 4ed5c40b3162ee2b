"""docker-compose.yml on a real Docker engine, as a user runs it, once with `docker-compose` (1.29,
Debian's package) and once with `docker compose` (v2) when its plugin is installed.

No image registry or package index is reachable from the engine here, so the stack runs on the
stand-in base images of deploy/standin-images.sh (debootstrap of Debian bookworm; cached in the
engine by content hash) and the dotrec image is built by deploy/offline-build.sh (the wheelhouse
of deploy/wheelhouse.sh, kept in ~/.cache/dotrec, served on 127.0.0.1 to a --no-index build).
Training data: the shared ml-100k archive, copied into a temporary folder mounted as IMPORT_DIR.

Then, through the proxy's port on 127.0.0.1 (the only address this test talks to): /ready; a
rating posted with the API key; the new user's recommendations (fold_in); `restart api` and
`stop db` + `start db` (the rating and the model still there, the api recovering by itself);
`run --rm train` (a new version, served after /admin/reload); `--scale api=2` (both replicas
answer through the proxy); `down -v` (no container, volume or network of the project left).

The engine is brought up when missing (tests/deploy/docker_engine.py): locally a test skips when
that cannot be done; in CI (CI=true) it fails. Timings go to $DOTREC_E2E_TIMINGS (JSON) if set.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_support import COMPOSE_FILE, ENV_EXAMPLE, REPO_ROOT, read_env_file, referenced_variables
from docker_engine import Engine, EngineUnavailable, bring_up, compose_v1, compose_v2

from app.config import Settings
from tests.requirements import missing

pytestmark = [pytest.mark.slow, pytest.mark.docker]

DEPLOY = REPO_ROOT / "deploy"
IMAGE = "dotrec-e2e:local"
NEW_USER = 900_001
"""A user id far above ml-100k's 943: nobody the model was trained on."""
STEP_TIMEOUT_S = 600
READY_TIMEOUT_S = 180


# --- the engine and the images ----------------------------------------------------------------------


# Module scope: a dockerd this module started is stopped as soon as its tests are done.
@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    try:
        up = bring_up(log)
    except EngineUnavailable as error:
        missing(f"no Docker engine for the compose test: {error}")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def standin_images(engine: Engine) -> dict[str, str]:
    """{PYTHON_IMAGE: tag, POSTGRES_IMAGE: tag, NGINX_IMAGE: tag} of the stand-ins (built once)."""
    done = subprocess.run(
        ["bash", str(DEPLOY / "standin-images.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "DOCKER": engine.docker},
    )
    if done.returncode != 0:
        pytest.fail(f"deploy/standin-images.sh failed:\n{done.stderr[-4000:]}")
    images = dict(line.split("=", 1) for line in done.stdout.split())
    assert set(images) == {"PYTHON_IMAGE", "POSTGRES_IMAGE", "NGINX_IMAGE"}, done.stdout
    return images


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, float]]:
    recorded: dict[str, float] = {}
    yield recorded
    if target := os.environ.get("DOTREC_E2E_TIMINGS"):
        Path(target).write_text(json.dumps(recorded, indent=2) + "\n")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the stack ---------------------------------------------------------------------------------------


class Stack:
    """One compose project driven by one compose command line, its env file in a temporary folder."""

    def __init__(self, compose: list[str], docker: str, settings: dict[str, str], folder: Path) -> None:
        self.compose = compose
        self.docker = docker
        self.settings = settings
        self.project = settings["COMPOSE_PROJECT_NAME"]
        self.logs = folder
        self.env_file = folder / "env"
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        # Nothing from this process's environment may override the env file (compose prefers the
        # shell's values): drop everything the compose file or the app reads.
        read = referenced_variables(COMPOSE_FILE.read_text()) | {n.upper() for n in Settings.model_fields}
        self.env = {k: v for k, v in os.environ.items() if k not in read and not k.startswith("COMPOSE_")}

    def argv(self, *args: str) -> list[str]:
        return [*self.compose, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE),
                "--env-file", str(self.env_file), *args]  # fmt: skip

    def __call__(self, *args: str, timeout: float = STEP_TIMEOUT_S, wrap: list[str] | None = None) -> str:
        """Run `compose ARGS` (inside `wrap`, e.g. the offline build); its output; fails with it."""
        argv = [*(wrap or []), *self.argv(*args)]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=self.env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as error:
            self.fail(f"`{' '.join(args)}` did not finish in {timeout} s: {error.output!r}")
        output = done.stdout + done.stderr
        if done.returncode != 0:
            self.fail(f"`{' '.join(args)}` exited {done.returncode}:\n{output[-4000:]}")
        return output

    def docker_json(self, *args: str) -> Any:
        done = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(done.stdout)

    def docker_lines(self, *args: str) -> list[str]:
        done = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.split()

    def containers(self, service: str | None = None, everything: bool = True) -> list[str]:
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        return self.docker_lines("ps", "-q", *(["-a"] if everything else []), *filters)

    def inspect(self, container: str) -> dict[str, Any]:
        return self.docker_json("inspect", container)[0]

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": self.docker_lines("ps", "-aq", "--filter", label),
            "volumes": self.docker_lines("volume", "ls", "-q", "--filter", label),
            "networks": self.docker_lines("network", "ls", "-q", "--filter", label),
        }

    def service_logs(self) -> str:
        done = subprocess.run(
            self.argv("logs", "--no-color", "--tail", "60"),
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
        )
        return done.stdout + done.stderr

    def fail(self, message: str) -> None:
        logs = self.service_logs()
        (self.logs / "compose.log").write_text(logs)
        pytest.fail(f"{message}\n--- docker compose logs (last lines) ---\n{logs[-6000:]}")


def wait_for(stack: Stack, what: str, check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check()` holds (exceptions count as not yet); fails the test at `timeout`."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
            last = None
        except (httpx.HTTPError, subprocess.SubprocessError, KeyError) as error:
            last = error
        time.sleep(0.5)
    stack.fail(f"{what}: not within {timeout} s" + (f" (last error: {last!r})" if last else ""))
    raise AssertionError  # not reached: fail raises


COMPOSE_CLIS = {"docker-compose": compose_v1, "docker compose": compose_v2}


@pytest.fixture(params=list(COMPOSE_CLIS), ids=["v1", "v2"])
def compose_cli(request: pytest.FixtureRequest, engine: Engine) -> list[str]:
    name = request.param
    found = compose_v1() if name == "docker-compose" else compose_v2(engine.docker)
    if found is None:
        if name == "docker compose":
            pytest.skip("no `docker compose` v2 plugin installed: the v1 variant covers the file")
        missing("no docker-compose command, though docker-compose was to be installed")
    return found


@pytest.fixture
def stack(
    compose_cli: list[str],
    engine: Engine,
    standin_images: dict[str, str],
    ml100k_archive: Path | None,
    tmp_path: Path,
) -> Iterator[Stack]:
    if ml100k_archive is None:
        missing(
            "the shared ml-100k archive (../shared/data/ml-100k.tar.gz or $DOTREC_SHARED_DATA) is missing"
        )
    imports = tmp_path / "import"
    imports.mkdir()
    shutil.copy(ml100k_archive, imports / ml100k_archive.name)
    # The container's user (uid 10001) reads the bind mount; pytest's folders are private.
    imports.chmod(0o755)
    (imports / ml100k_archive.name).chmod(0o644)
    variant = "v2" if compose_cli[-1] == "compose" else "v1"
    project = f"dotrec-e2e-{variant}"
    settings = {
        **read_env_file(ENV_EXAMPLE),  # `cp .env.example .env`, then these lines changed:
        "COMPOSE_PROJECT_NAME": project,
        **standin_images,
        "DOTREC_IMAGE": IMAGE,
        "IMPORT_DIR": str(imports),
        "DATA_SOURCE": f"/import/{ml100k_archive.name}",
        "TRAIN_ARGS": "--epochs 2",
        "API_KEY": secrets.token_hex(16),
        "PROXY_BIND": "127.0.0.1",
        "PROXY_PORT": str(_free_port()),
    }
    running = Stack(compose_cli, engine.docker, settings, tmp_path)
    # What an aborted earlier run may have left under the same project name.
    running("down", "-v", "--remove-orphans", "--timeout", "5")
    yield running
    running("down", "-v", "--remove-orphans", "--timeout", "5")


# --- the test --------------------------------------------------------------------------------------------


def test_the_stack_runs_on_a_real_engine(stack: Stack, timings: dict[str, float]) -> None:
    settings = stack.settings
    variant = stack.project.rsplit("-", 1)[1]
    key = {"X-API-Key": settings["API_KEY"]}
    base_url = f"http://127.0.0.1:{settings['PROXY_PORT']}"
    started = time.monotonic()

    # The image, built with no index: the wheelhouse served on 127.0.0.1 for the build only.
    begin = time.monotonic()
    stack("build", "api", wrap=["bash", str(DEPLOY / "offline-build.sh")])
    timings[f"{variant}_build_s"] = round(time.monotonic() - begin, 1)

    # trust_env=False: no proxy from the environment between this test and 127.0.0.1.
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:

        def ready(version: str | None = None) -> bool:
            answer = client.get("/ready")
            return answer.status_code == 200 and (
                version is None or answer.json()["model_version"] == version
            )

        # docker-compose up -d: db, migrate, train (imports ml-100k, trains), api, proxy.
        begin = time.monotonic()
        stack("up", "-d")
        wait_for(stack, "/ready through the proxy after up", ready, READY_TIMEOUT_S)
        timings[f"{variant}_up_to_ready_s"] = round(time.monotonic() - begin, 1)
        assert stack.project in {
            stack.inspect(c)["Config"]["Labels"]["com.docker.compose.project"] for c in stack.containers()
        }, "COMPOSE_PROJECT_NAME from the env file names the project"
        _only_the_proxy_is_published_and_on_loopback(stack, int(settings["PROXY_PORT"]))
        _backend_network_is_internal(stack)
        version = client.get("/ready").json()["model_version"]

        # A rating for a user the model has never seen, with the key (and refused without it).
        rating = {"user_id": NEW_USER, "movie_id": 50, "rating": 4.5}
        assert client.post("/ratings", json=rating).status_code == 401
        posted = client.post("/ratings", json=rating, headers=key)
        assert posted.status_code == 201, posted.text
        _serves_fold_in(client, version)

        # restart api: the rating (database) and the model (volume) are still there.
        stack("restart", "api")
        wait_for(stack, "/ready after `restart api`", lambda: ready(version), READY_TIMEOUT_S)
        _serves_fold_in(client, version)

        # stop db, start db: the api says it is not ready, then recovers by itself.
        api = stack.containers("api")[0]
        before = stack.inspect(api)["State"]
        stack("stop", "db")
        wait_for(stack, "/ready 503 with db stopped", lambda: client.get("/ready").status_code == 503, 60)
        stack("start", "db")
        wait_for(stack, "/ready after `start db`", lambda: ready(version), READY_TIMEOUT_S)
        after = stack.inspect(api)["State"]
        assert (after["StartedAt"], after["Running"]) == (before["StartedAt"], True), "api was not restarted"
        _serves_fold_in(client, version)

        # run --rm train: a new version from the stored ratings (the one posted above among them);
        # the running api serves it once reloaded.
        begin = time.monotonic()
        trained = stack("run", "--rm", "train")
        timings[f"{variant}_retrain_s"] = round(time.monotonic() - begin, 1)
        assert "not importing (--if-empty)" in trained, trained[-2000:]
        assert client.post("/admin/reload").status_code == 401
        reload = client.post("/admin/reload", headers=key)
        assert reload.status_code == 200, reload.text
        # `reloaded` may be false: an api that follows MODELS_DIR/current by itself can be first.
        newer = reload.json()["version"]
        assert newer != version, reload.json()
        assert client.get("/ready").json()["model_version"] == newer
        _serves_fold_in(client, newer, strategy="model")  # trained on the rating posted above

        # --scale api=2: both replicas answer through the proxy (each logs the requests it served).
        stack("up", "-d", "--no-deps", "--scale", "api=2", "api")
        replicas = stack.containers("api", everything=False)
        assert len(replicas) == 2, replicas
        wait_for(
            stack,
            "both api replicas healthy",
            lambda: all(stack.inspect(r)["State"]["Health"]["Status"] == "healthy" for r in replicas),
            READY_TIMEOUT_S,
        )
        _both_replicas_answer(stack, client, replicas)

    # down -v: nothing of the project is left.
    stack("down", "-v", "--timeout", "10")
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
    timings[f"{variant}_test_s"] = round(time.monotonic() - started, 1)


def _serves_fold_in(client: httpx.Client, version: str, strategy: str = "fold_in") -> None:
    """NEW_USER's one rating is stored, and their recommendations come from `version` by
    `strategy`: fold_in while the model has not seen them, model once trained with the rating."""
    rated = client.get(f"/users/{NEW_USER}/ratings")
    assert rated.status_code == 200 and rated.json()["total"] == 1, rated.text
    answer = client.get(f"/recommendations/{NEW_USER}", params={"k": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["strategy"] == strategy and body["model_version"] == version, body
    assert len(body["items"]) == 5 and 50 not in [item["movie_id"] for item in body["items"]]


def _only_the_proxy_is_published_and_on_loopback(stack: Stack, port: int) -> None:
    published = {}
    for container in stack.containers(everything=False):
        details = stack.inspect(container)
        service = details["Config"]["Labels"]["com.docker.compose.service"]
        for bindings in (details["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                published.setdefault(service, set()).add((binding["HostIp"], int(binding["HostPort"])))
    assert published == {"proxy": {("127.0.0.1", port)}}, published


def _backend_network_is_internal(stack: Stack) -> None:
    networks = {
        stack.docker_json("network", "inspect", n)[0]["Name"].rsplit("_", 1)[-1]: stack.docker_json(
            "network", "inspect", n
        )[0]["Internal"]
        for n in stack.leftovers()["networks"]
    }
    assert networks == {"backend": True, "edge": False}, networks
    db = stack.inspect(stack.containers("db")[0])
    assert set(db["NetworkSettings"]["Networks"]) == {f"{stack.project}_backend"}


def _both_replicas_answer(stack: Stack, client: httpx.Client, replicas: list[str]) -> None:
    """Requests through the proxy, each marked, until every replica's log shows one of them (nginx
    re-reads the replicas' addresses every 5 s, so the second may take a moment to get any)."""
    marker = secrets.token_hex(6)
    sent = 0

    def every_replica_served() -> bool:
        nonlocal sent
        for _ in range(10):
            sent += 1
            assert client.get("/health", params={"probe": f"{marker}-{sent}"}).status_code == 200
        logs = [
            subprocess.run([stack.docker, "logs", r], capture_output=True, text=True, timeout=60)
            for r in replicas
        ]
        return all(marker in log.stdout + log.stderr for log in logs)

    wait_for(stack, "requests through the proxy reaching both replicas", every_replica_served, 60)
