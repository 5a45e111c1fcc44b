"""The knowledge store: a relational database of categories, models, annotators, raw clicks
and aggregated keypoints (SQLAlchemy 2, Alembic migrations; SQLite in WAL mode by default,
PostgreSQL when a URL says so).

Modules: ``schema`` (tables), ``db`` (engines, sessions, migrations), ``repo`` (queries and
the one-transaction save), ``exchange`` (import/export in the KeypointNet JSON layout).
"""

from kpengine.store.db import Store, default_url, open_store

__all__ = ["Store", "default_url", "open_store"]
