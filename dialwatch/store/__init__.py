"""Durable state behind one async interface (`Store`), and opening a backend for a
DIALWATCH_STATE setting: a PostgreSQL URL, which several replicas share, or else a
SQLite file path. A backend is a package of its own here; nothing outside this package
writes SQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from yarl import URL

from dialwatch.logs import REDACTOR
from dialwatch.settings import default_replica, is_postgres
from dialwatch.store.protocol import (
    Fence,
    Known,
    LedgerCheckpoint,
    LedgerCursor,
    ReplicaInfo,
    SpendQuery,
    Store,
)
from dialwatch.store.sqlite import SqliteStore

__all__ = [
    "Fence",
    "Known",
    "LedgerCheckpoint",
    "LedgerCursor",
    "ReplicaInfo",
    "SpendQuery",
    "Store",
    "is_postgres",
    "open_copy",
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


async def open_copy(location: str | Path, replica: str | None = None) -> Store:
    """A private copy in memory of the state at `location`, empty if there is none yet:
    for a dry run, which must not write the state, lock it, or create it."""
    if not is_postgres(location) and not await asyncio.to_thread(Path(location).exists):
        return await SqliteStore.open(":memory:", replica or default_replica(location))
    store = await open_store(location, replica)
    try:
        return await store.in_memory_copy()
    finally:
        await store.close()


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
