"""PostgreSQL: NOTIFY dotrec_ratings after every statement that changes ratings.

Serving processes LISTEN on the channel and keep what they read of users' ratings until the
next notification (app.db.reads), as SQLite's PRAGMA data_version lets them. Statement-level, so
a COPY of a million rows notifies once; notifications are delivered when the transaction
commits. Nothing on SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "dotrec_ratings"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION dotrec_ratings_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ratings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ratings "
        "FOR EACH STATEMENT EXECUTE FUNCTION dotrec_ratings_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS ratings_changed ON ratings")
    op.execute("DROP FUNCTION IF EXISTS dotrec_ratings_changed()")
