"""Alembic environment: dotrec's models, on the connection a caller hands over or a fresh engine.

The database is, first to last: a connection in ``config.attributes["connection"]`` (what
`app.db.schema` passes), ``-x url=...`` on the command line, ``sqlalchemy.url`` in the config,
and finally ``Settings().database_url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.config import Settings
from app.db.models import Base
from app.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """The URL to migrate when no connection was handed over."""
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or Settings().database_url
    )


def run_on(connection: Connection) -> None:
    """Run the migrations in one transaction on `connection`, with no statement timeout."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        context.run_migrations()


def run_offline() -> None:
    """Write the SQL to standard output instead of running it."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=database_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run against the handed-over connection, else a fresh engine on `database_url()`."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = make_engine(database_url())
    try:
        with engine.connect() as fresh:
            run_on(fresh)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
