"""`python -m app.cli ARGS` is `dotrec ARGS` (what torchrun starts in every rank)."""

from app.cli import app

app()
