"""Durable state behind one async interface (`Store`), and opening a backend for a
DIALWATCH_STATE setting. A backend is a module of its own here; nothing outside this
package writes SQL."""

from __future__ import annotations

from pathlib import Path

from dialwatch.store.protocol import LedgerCheckpoint, Store
from dialwatch.store.sqlite import SqliteStore

__all__ = ["LedgerCheckpoint", "Store", "open_store"]


async def open_store(location: Path | str) -> Store:
    """The store at `location` (a SQLite file path), opened at the current schema."""
    return await SqliteStore.open(location)
