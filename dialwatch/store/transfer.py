"""Copying a SQLite state file into PostgreSQL (`dialwatch state import`): every table,
row for row, in one transaction, into a database that holds no state yet."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dialwatch.errors import ConfigError
from dialwatch.store.sql import TABLES
from dialwatch.store.sqlite import SqliteStore

Table = tuple[list[str], list[tuple[object, ...]]]  # column names, rows


async def import_sqlite(source: Path, target: str, replica: str) -> dict[str, int]:
    """Copy the state file at `source` into the PostgreSQL database at `target`;
    returns the rows copied per table. Refuses a database that already holds state."""
    if not await asyncio.to_thread(source.is_file):
        raise ConfigError(f"{source}: no such state file")
    sqlite = await SqliteStore.open(source, replica)  # at the current schema
    try:
        tables = await sqlite.dump(TABLES)
    finally:
        await sqlite.close()
    from dialwatch.store.postgres import PostgresStore  # psycopg only when it is needed

    postgres = await PostgresStore.open(target, replica)
    try:
        await postgres.load(tables)
    finally:
        await postgres.close()
    return {name: len(rows) for name, (_, rows) in tables.items()}
