"""The producer's database engine and its one insert (kept apart from ``api.py``, which
stays small)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from t2v_core.db import get_engine, get_tuned_engine, pool_options
from t2v_core.settings import Settings
from t2v_core.store import JobStore


def producer_engine(settings: Settings) -> Engine:
    """The producer's engine: on PostgreSQL one that never pings (``ping_idle=None``).

    A ping is a round trip before a checkout: a third of a single ``enqueue``.
    A connection the server dropped is caught by ``Producer._insert`` instead (reads just
    fail once and work again). Both live in ``t2v_core.db``'s registry.
    """
    url = settings.database_url
    if make_url(url).get_backend_name() != "postgresql":
        return get_engine(url)
    options = {**pool_options(settings), "ping_idle": None, "pool_recycle": 1800}
    return get_tuned_engine("producer", url, **options)


def insert_once(store: JobStore, row: dict[str, Any]) -> None:
    """Insert a new row. Producer engines skip the pre-ping round trip (``producer_engine``):
    a connection the database dropped fails once, is invalidated, and the insert is tried
    again; if that first attempt did commit before the connection broke, it is done."""
    try:
        store.insert_one(row)
    except DBAPIError as exc:
        if isinstance(exc, IntegrityError) or not exc.connection_invalidated:
            raise
        try:
            store.insert_one(row)
        except IntegrityError:
            if store.get(row["id"]) is None:
                raise
