"""The SQLite store behind the async Store protocol: a state file written by an
earlier release keeps everything in it, and the store never blocks the event loop."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dialwatch.alerting.lifecycle import Status
from dialwatch.delivery.outbox import deliver_due
from dialwatch.pipeline.cycle import run_cycle
from dialwatch.store import open_store
from dialwatch.units import Money
from tests.conftest import RULES, MakeHarness
from tests.servers import SmtpServer, WebhookReceiver

# Written by dialwatch 0.1.0 as released before the store became async (commit 255db7c):
# wallet-low firing since 11:00 and announced once, cancelling pending, one undelivered
# notification for oncall, a silence on cancelling, a ledger cursor and one item match.
RELEASED = Path(__file__).parent / "data" / "state-v4.db"
WRITTEN_AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def test_state_file_of_the_previous_release_keeps_alerts_silences_outbox_and_cursor(
    tmp_path: Path,
) -> None:
    """Every kind of state the released file holds reads back the same."""
    path = tmp_path / "state.db"
    shutil.copy(RELEASED, path)
    store = await open_store(path)
    try:
        states = await store.alert_states("dial")
        assert {rule: s.status for rule, s in states.items()} == {
            "wallet-low": Status.FIRING,
            "cancelling": Status.PENDING,
        }
        assert states["wallet-low"].notifications == 1
        assert states["wallet-low"].active_since == WRITTEN_AT - timedelta(hours=1)
        assert [(s.id, s.rule, s.account, s.reason) for s in await store.silences(WRITTEN_AT)] == [
            (1, "cancelling", "dial", "known: renewing by hand")
        ]
        due = await store.due(WRITTEN_AT)
        assert [(row.channel, row.alert, row.message.title) for row in due] == [
            (
                "oncall",
                "dial/wallet-low",
                "[WARNING] dial / wallet-low: wallet balance $42.00 is below $50.00",
            )
        ]
        assert (await store.ledger_cursor("dial")).newest == WRITTEN_AT - timedelta(minutes=1)  # type: ignore[union-attr]
        matches = await store.item_matches("dial", "expensive-call", 10)
        assert (matches.count, matches.total) == (1, Money(1234))
        assert await store.last_balance("dial") == Money(4200)
        assert await store.digest_sent_for("dial/daily") == WRITTEN_AT - timedelta(hours=4)
        assert await store.fired_between("dial", WRITTEN_AT, WRITTEN_AT + timedelta(1)) == {
            "wallet-low": 1
        }
    finally:
        await store.close()


async def test_the_service_carries_on_from_a_state_file_of_the_previous_release(
    tmp_path: Path, make_harness: MakeHarness, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """The released file's undelivered alert goes out, and the alert it recorded as
    firing resolves (not fires again) when the balance is back: the state carried over."""
    shutil.copy(RELEASED, tmp_path / "state.db")
    h = await make_harness(RULES)
    report = await run_cycle(h.watcher)
    await deliver_due(h.watcher.store, h.watcher.notifier, h.clock.now())
    resolved = "[RESOLVED] dial / wallet-low: wallet balance $235.00 is back above $50.00"
    assert [(o.spec.name, o.decision.value) for o in report.outcomes if o.message] == [
        ("wallet-low", "resolved")
    ]
    assert webhook.titles == [
        "[WARNING] dial / wallet-low: wallet balance $42.00 is below $50.00",
        resolved,
    ]
    assert smtp.subjects == [resolved]


async def test_a_store_waiting_on_a_lock_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """While another process holds the state file's write lock, a store write waits on
    its own thread: the event loop goes on (endpoints and other accounts are served),
    and the write completes once the lock is released."""
    path = tmp_path / "state.db"
    store = await open_store(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
        write = asyncio.create_task(store.add_silence("x", None, now + timedelta(1), "r", now))
        await asyncio.sleep(0)  # one turn of the loop: a blocking store would finish (failed) here
        assert not write.done()
        other.execute("COMMIT")
        assert await write == 1
    finally:
        other.close()
        await store.close()
