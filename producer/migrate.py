"""Schema upgrades. Placeholder until Alembic migrations land: creates the tables."""

from __future__ import annotations

from sqlalchemy import Engine


def upgrade(engine: Engine) -> None:
    from producer.records import Base

    Base.metadata.create_all(engine)
