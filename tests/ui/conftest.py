"""The dashboard under test.

- In-process (`client`): the API tests' small generated catalog and ratings in a fresh database
  (SQLite and PostgreSQL through the shared `engine` fixture) and a tiny model, for the JSON
  routes of /ui.
- In a browser (`ui`): headless Chromium (Debian's `chromium` package, driven by Playwright; no
  browser is downloaded) against real `dotrec serve` processes on SQLite, with ML-100K from the
  shared data folder when it is there (else the generated ratings), imported and trained by the CLI
  once a session. Every page's console errors and uncaught exceptions fail the test using it, and
  each test saves screenshots under tests/ui/artifacts/ (DOTREC_UI_ARTIFACTS moves it; git-ignored).

Without Chromium or the playwright package the browser tests are skipped locally and fail in CI
(`tests.requirements.missing`); `scripts/ensure-chromium.sh` (run by scripts/test.sh) installs
Chromium with apt-get when it can.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.db.schema import upgrade
from app.db.session import make_engine
from tests.api.api_support import Data, make_data, seed_database, started_clients, train_model
from tests.api.live_server import LiveServer, run_dotrec
from tests.requirements import missing
from tests.ui.ui_support import DESKTOP, UI_API_KEY, Ui, chromium_executable

# --- in-process ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def data() -> Data:
    return make_data()


@pytest.fixture(scope="session")
def trained_models(data: Data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-models")
    train_model(data, folder)
    return folder


@pytest.fixture
def seeded(engine: Engine, data: Data, database_url: str) -> str:
    """A database of each kind (SQLite, PostgreSQL) holding the test catalog and ratings."""
    seed_database(engine, data)
    return database_url


@pytest.fixture
def sqlite_seeded(tmp_path: Path, data: Data) -> Iterator[str]:
    """A SQLite database holding the test catalog and ratings, for what does not depend on the database."""
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    upgrade(url)
    engine = make_engine(url)
    seed_database(engine, data)
    engine.dispose()
    yield url


@pytest.fixture
def make_client(sqlite_seeded: str, trained_models: Path) -> Iterator[Any]:
    """Makes started TestClients on SQLite and the trained model (read only); keyword arguments
    override settings."""
    yield from started_clients(sqlite_seeded, trained_models)


@pytest.fixture
def client(make_client: Any) -> TestClient:
    return make_client()


@pytest.fixture
def any_client(seeded: str, trained_models: Path) -> Iterator[TestClient]:
    """A started TestClient on each kind of database (for the reads that go to it)."""
    for make in started_clients(seeded, trained_models):
        yield make()


# --- real servers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A database and models folder for `dotrec serve`, and what they hold."""

    env: dict[str, str]
    real_data: bool
    """True: ML-100K; False: the generated ratings."""
    folder: Path


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, ml100k_archive: Path | None, data: Data) -> Served:
    """A SQLite database with ratings imported and a model trained by the CLI, once a session."""
    folder = tmp_path_factory.mktemp("ui-served")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{folder / 'dotrec.db'}",
        "MODELS_DIR": str(folder / "models"),
        "DATA_DIR": str(folder / "data"),
    }
    env.pop("API_KEY", None)
    source = str(ml100k_archive) if ml100k_archive is not None else str(data.write_csv(folder / "csv"))
    run_dotrec(env, "db", "upgrade")
    run_dotrec(env, "import", source, "--quiet")
    run_dotrec(env, "train", "--quiet", "--epochs", "3", "--dim", "16")
    return Served(env, ml100k_archive is not None, folder)


def _start(served: Served, name: str, **extra: str) -> Iterator[LiveServer]:
    log_dir = served.folder / name
    log_dir.mkdir(exist_ok=True)
    server = LiveServer({**served.env, **extra}, log_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(served: Served) -> Iterator[LiveServer]:
    """`dotrec serve` without an API key."""
    yield from _start(served, "open")


@pytest.fixture(scope="session")
def keyed_server(served: Served) -> Iterator[LiveServer]:
    """`dotrec serve` with API_KEY set (the same database and model)."""
    yield from _start(served, "keyed", API_KEY=UI_API_KEY)


# --- the browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright, once a session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[dev]')")
    executable = chromium_executable()
    if executable is None:
        missing("Chromium is not installed: apt-get install -y chromium (scripts/ensure-chromium.sh)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def make_ui(browser: Any, server: LiveServer) -> Iterator[Any]:
    """Makes `Ui`s (a viewport size may be given); after the test, fails on any console error or
    uncaught exception their pages had."""
    made: list[tuple[Any, Ui]] = []

    def make(viewport: dict[str, int] = DESKTOP) -> Ui:
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(10_000)
        page = context.new_page()
        ui = Ui(page, server.url)
        page.on(
            "console",
            lambda m: ui.problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: ui.problems.append(f"uncaught: {e}"))
        made.append((context, ui))
        return ui

    yield make
    problems = []
    for context, ui in made:
        problems += ui.unexpected()
        context.close()
    assert not problems, "the pages logged errors:\n" + "\n".join(problems)


@pytest.fixture
def ui(make_ui: Any) -> Ui:
    return make_ui()
