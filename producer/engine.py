"""The producer's database engine (kept apart from ``api.py``, which stays small)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from t2v_core.db import get_engine, get_tuned_engine


def producer_engine(url: str) -> Engine:
    """The producer's engine: on PostgreSQL one without ``pool_pre_ping``.

    The pre-ping is a round trip before every checkout: a third of a single ``enqueue``.
    A connection the server dropped is caught by ``Producer._insert`` instead (reads just
    fail once and work again). Both live in ``t2v_core.db``'s registry.
    """
    if make_url(url).get_backend_name() != "postgresql":
        return get_engine(url)
    return get_tuned_engine("producer", url, pool_pre_ping=False, pool_recycle=1800)
