"""Alembic environment for kpengine's store.

Run programmatically by :func:`kpengine.store.db.upgrade`, which hands over an open
connection in ``config.attributes["connection"]``; ``alembic -x url=...`` from a shell
works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from kpengine.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    from kpengine.store.db import normalise_url

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
