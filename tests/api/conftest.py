"""The REST API under test: a small generated catalog and ratings in a fresh database (SQLite and
PostgreSQL through the shared `engine` fixture), a tiny model trained once on the same ratings,
and TestClients running the app's lifespan."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_support import (
    ClientMaker,
    Data,
    make_data,
    seed_database,
    started_clients,
    train_model,
)
from fastapi.testclient import TestClient
from live_server import LiveServer
from pg_server import DedicatedPostgres, postgres_bindir
from sqlalchemy import Engine

from tests.requirements import missing


@pytest.fixture(scope="session")
def data() -> Data:
    return make_data()


@pytest.fixture(scope="session")
def trained_models(data: Data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding one version, trained once a session; copy before changing it."""
    folder = tmp_path_factory.mktemp("models")
    train_model(data, folder)
    return folder


@pytest.fixture
def models_dir(trained_models: Path, tmp_path: Path) -> Path:
    """This test's own copy of the trained models folder."""
    folder = tmp_path / "models"
    shutil.copytree(trained_models, folder, symlinks=True)
    return folder


@pytest.fixture
def seeded(engine: Engine, data: Data, database_url: str) -> str:
    """The URL of a migrated database holding the test catalog and ratings."""
    seed_database(engine, data)
    return database_url


@pytest.fixture
def make_client(seeded: str, models_dir: Path) -> Iterator[ClientMaker]:
    """Makes started TestClients on the seeded database and this test's models folder;
    keyword arguments override settings."""
    yield from started_clients(seeded, models_dir)


@pytest.fixture
def client(make_client: ClientMaker) -> TestClient:
    """A started client, no API key."""
    return make_client()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Starts real `dotrec serve` processes (LiveServer's arguments); stops them afterwards,
    printing their logs (shown when the test fails)."""
    servers: list[LiveServer] = []

    def start(env: dict[str, str], wait_for: str = "/ready", serve_args: tuple[str, ...] = ()) -> LiveServer:
        server = LiveServer(env, tmp_path, wait_for, serve_args)
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def dedicated_postgres() -> Iterator[DedicatedPostgres]:
    """A started PostgreSQL server of this test's own; skipped without PostgreSQL's server
    programs (a failure in CI)."""
    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
        missing(message)
    server = DedicatedPostgres(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()
