"""The SQLite file: its schema, migrations between versions, and transactions."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dialwatch.errors import ConfigError

SCHEMA_VERSION = 4  # bump with a migration in _MIGRATIONS when a table changes
# What takes a state file from version N-1 to N: statements, each run if its table
# exists (a missing table is created whole, and current, from _SCHEMA).
_MIGRATIONS: dict[int, tuple[tuple[str, str], ...]] = {
    2: (("outbox", "ALTER TABLE outbox ADD COLUMN parts TEXT NOT NULL DEFAULT '[]'"),),
    3: (("outbox", "ALTER TABLE outbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0"),),
    # Many accounts: item fields of other providers; digests are sent per account (the
    # one account before was "dial").
    4: (
        ("ledger", "ALTER TABLE ledger ADD COLUMN action TEXT"),
        ("ledger", "ALTER TABLE ledger ADD COLUMN description TEXT"),
        ("ledger", "ALTER TABLE ledger ADD COLUMN zone TEXT"),
        ("digests", "UPDATE digests SET name = 'dial/' || name"),
    ),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    status TEXT NOT NULL,
    active_since TEXT,
    last_notified TEXT,
    notifications INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, rule)
);
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    checked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert TEXT NOT NULL,
    decision TEXT NOT NULL,
    channel TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    notify_type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at TEXT,
    expired_at TEXT,
    parts TEXT NOT NULL DEFAULT '[]',  -- JSON: [alert, decision, title, body, notify_type]
    held INTEGER NOT NULL DEFAULT 0  -- held back by quiet hours until next_attempt_at
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND expired_at IS NULL;
CREATE TABLE IF NOT EXISTS ledger (
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,  -- microseconds since the epoch, UTC
    cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    fare TEXT,
    number TEXT,
    attribution TEXT,
    kind TEXT,
    invoice_id TEXT,
    reason TEXT,
    action TEXT,
    description TEXT,
    zone TEXT,
    PRIMARY KEY (account, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_cursor (
    account TEXT PRIMARY KEY,
    newest TEXT NOT NULL
);
-- Silences: a rule (glob) on one account or all, muted until ends_at.
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    account TEXT,
    ends_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- Every notification decision, for digests ("alerts fired"); kept 8 days.
CREATE TABLE IF NOT EXISTS alert_log (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    decision TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_log_time ON alert_log (account, at);
-- When each digest last went out (or was first scheduled), by "account/digest".
CREATE TABLE IF NOT EXISTS digests (
    name TEXT PRIMARY KEY,
    sent_for TEXT NOT NULL
);
-- Since when checks of an account have failed without a success in between.
CREATE TABLE IF NOT EXISTS failing (
    account TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
-- The status page's history: one balance point per account and 15 minutes (the last
-- value seen), and usage spend per UTC day; both kept for 8 days.
CREATE TABLE IF NOT EXISTS balance_history (
    account TEXT NOT NULL,
    at INTEGER NOT NULL,  -- start of the 15-minute bucket, microseconds since the epoch
    cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (account, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spend_days (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    cents INTEGER NOT NULL,
    PRIMARY KEY (account, day)
) WITHOUT ROWID;
-- New items that matched an item rule, until the end of the check groups them into
-- one message: durable, so a crash mid-backlog loses no per-item alert.
CREATE TABLE IF NOT EXISTS item_matches (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (account, rule, key)
) WITHOUT ROWID;
"""


class Database:
    """One connection to the state file, opened at the current schema."""

    def __init__(self, path: Path | str) -> None:
        self._savepoints = itertools.count()
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{path}: state file is from a newer dialwatch (schema {version}, this one "
                f"reads {SCHEMA_VERSION}); upgrade dialwatch or point DIALWATCH_STATE elsewhere"
            )
        if version:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                self._migrate(_MIGRATIONS[step])
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _migrate(self, steps: tuple[tuple[str, str], ...]) -> None:
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master")}
        for table, statement in steps:
            if table in tables:
                self._db.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # A savepoint is a transaction of its own, or nests inside `rolled_back`.
        name = f"sp{next(self._savepoints)}"
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield self._db
        except BaseException:
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
            raise
        self._db.execute(f"RELEASE {name}")

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """Everything written inside is undone at the end: for dry runs."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("ROLLBACK")
