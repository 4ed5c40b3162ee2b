"""Schema migrations (Alembic) run from code: upgrade, downgrade, and the check the API runs at start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import app
from app.config import Settings
from app.db.session import make_engine

UPGRADE_COMMAND = "dotrec db upgrade"


class SchemaOutOfDate(RuntimeError):
    """The database's schema is missing or not at the revision this code expects."""


def repo_root() -> Path:
    """The folder holding `alembic.ini` and `migrations/`: beside the `app` package, else cwd.

    An editable install keeps `app` in the checkout, so its parent is the repository root.
    """
    for candidate in (Path(app.__file__).resolve().parents[1], Path.cwd()):
        if (candidate / "alembic.ini").is_file() and (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("alembic.ini and migrations/ not found beside the app package or in cwd")


def alembic_config() -> Config:
    """The Alembic config of the repository, wherever the process runs from."""
    root = repo_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database at `database_url` up to `revision`."""
    _run(command.upgrade, database_url, revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Migrate the database at `database_url` down to `revision` (base drops every table)."""
    _run(command.downgrade, database_url, revision)


def head_revision() -> str:
    """The newest revision among the migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migration scripts found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None when it has never been migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema_current(engine: Engine) -> None:
    """Raise `SchemaOutOfDate`, naming the command to run, unless the database is at head."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutOfDate(f"the database has no dotrec schema; run `{UPGRADE_COMMAND}`")
    raise SchemaOutOfDate(
        f"the database schema is at revision {current}, this code needs {head};"
        f" run `{UPGRADE_COMMAND}` (or deploy the code that knows {current})"
    )


def migrated_engine(database_url: str, settings: Settings | None = None) -> Engine:
    """The engine of `database_url` once its schema is known to be current; SchemaOutOfDate
    (naming the command to run) otherwise."""
    engine = make_engine(database_url, settings)
    try:
        check_schema_current(engine)
    except SchemaOutOfDate:
        engine.dispose()
        raise
    return engine


def _run(alembic_command: Callable[[Config, str], None], database_url: str, revision: str) -> None:
    """Run an Alembic command on a connection of our own engine (SQLite pragmas included)."""
    config = alembic_config()
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            alembic_command(config, revision)
    finally:
        engine.dispose()
