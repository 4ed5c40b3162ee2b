"""`dotrec`: the command line (typer). Heavy imports live inside the commands so each starts fast.

The commands are grouped by what they work on: `database` (schema, import, synthetic data),
`training` (train, evaluate) and `serving` (serve, recommend-all).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="dotrec: dot-product recommendations for explicit ratings.", no_args_is_help=True)
db_app = typer.Typer(help="The ratings database's schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    logging.getLogger("app").setLevel(logging.DEBUG if verbose else logging.INFO)


# the command modules register their commands on `app` and `db_app` when imported
from app.cli import database, serving, training  # noqa: E402, F401
