"""Durable state behind one async interface (`Store`), and opening a backend for a
DIALWATCH_STATE setting: a PostgreSQL URL, which several replicas share, or else a
SQLite file path. A backend is a package of its own here; nothing outside this package
writes SQL."""

from __future__ import annotations

from pathlib import Path

from yarl import URL

from dialwatch.logs import REDACTOR
from dialwatch.settings import default_replica, is_postgres
from dialwatch.store.protocol import Fence, LedgerCheckpoint, ReplicaInfo, Store
from dialwatch.store.sqlite import SqliteStore

__all__ = [
    "Fence",
    "LedgerCheckpoint",
    "ReplicaInfo",
    "Store",
    "is_postgres",
    "open_store",
    "shown_location",
]


def shown_location(location: str | Path) -> str:
    """`location` as it may be shown: a URL's password masked."""
    text = str(location)
    if not is_postgres(text):
        return text
    try:
        url = URL(text)
    except ValueError:
        return "postgresql://***"
    return str(url.with_password("***")) if url.password else text


async def open_store(location: str | Path, replica: str | None = None) -> Store:
    """The store at `location`, opened at the current schema (created or upgraded as
    needed). `replica` names this process in a cluster (default: host name and pid)."""
    name = replica or default_replica(location)
    if is_postgres(location):
        from dialwatch.store.postgres import PostgresStore

        url = URL(str(location))
        if url.password:
            REDACTOR.add(url.password)
        return await PostgresStore.open(str(location), name)
    return await SqliteStore.open(location, name)
