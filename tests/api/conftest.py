"""The REST API under test: a small generated catalog and ratings in a fresh database (SQLite and
PostgreSQL through the shared `engine` fixture), a tiny model trained once on the same ratings,
and TestClients running the app's lifespan."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import ClientMaker, Data, api_settings, make_data, seed_database, train_model
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.api.main import create_app


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
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = api_settings(**({"database_url": seeded, "models_dir": models_dir} | overrides))
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientMaker) -> TestClient:
    """A started client, no API key."""
    return make_client()
