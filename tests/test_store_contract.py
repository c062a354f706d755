"""The Store contract, run against every backend (a SQLite file and a PostgreSQL
database): what a check commits, the outbox, the ledger, silences, dry runs, and the
cluster's leases, fencing and delivery claims."""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.cluster.leases import LeaseKeeper
from dialwatch.delivery.messages import Message, Part
from dialwatch.delivery.notifier import AppriseNotifier
from dialwatch.delivery.outbox import OutboxEntry, Unrecorded, deliver_due
from dialwatch.errors import ConfigError, LeaseLost, StateUnavailable
from dialwatch.model import LedgerItem, time_key
from dialwatch.rules.schema import Channel, Match
from dialwatch.store import Fence, LedgerCheckpoint, SpendQuery, Store, open_store
from dialwatch.store.sql import TABLES
from dialwatch.store.transfer import import_sqlite
from dialwatch.units import Money
from tests.servers import WebhookReceiver
from tests.test_store import RELEASED, WRITTEN_AT

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(hours=24)
TTL = timedelta(seconds=30)


def message(title: str, notify_type: str = "warning") -> Message:
    return Message(title, f"{title}.", notify_type)


def usage(minutes_ago: int, cents: int, fare: str, number: str = "+15550100") -> LedgerItem:
    at = NOW - timedelta(minutes=minutes_ago)
    return LedgerItem(f"{time_key(at)}-{fare}", "usage", at, cents, "USD", fare, number, "wallet")


@pytest.fixture
async def store(state_location: str) -> AsyncIterator[Store]:
    opened = await open_store(state_location, replica="r1")
    yield opened
    await opened.close()


async def test_a_check_commits_states_balance_and_history(store: Store) -> None:
    """What one check commits reads back: alert states, balance and its history, the
    failing-since mark, fired alerts and digests."""
    firing = AlertState(Status.FIRING, NOW - timedelta(hours=1), NOW, 1)
    await store.commit_check(
        "dial", NOW, {"low": firing, "gone": AlertState()}, [], EXPIRES,
        balance=Money(4200), failing_since=NOW - timedelta(minutes=5),
        decisions=[("low", "first")], digests=[("dial/daily", NOW)],
    )  # fmt: skip
    assert await store.alert_states("dial") == {"low": firing}
    assert await store.last_balance("dial") == Money(4200)
    assert await store.balance_at("dial", NOW + timedelta(minutes=1)) == Money(4200)
    assert await store.balance_history("dial", NOW - timedelta(hours=1)) == [(NOW, Money(4200))]
    assert (await store.known("dial", NOW)).failing_since == NOW - timedelta(minutes=5)
    assert await store.fired_between("dial", NOW, NOW + timedelta(1)) == {"low": 1}
    assert await store.digest_sent_for("dial/daily") == NOW

    await store.commit_check("dial", NOW, {"low": AlertState()}, [], EXPIRES)
    assert await store.alert_states("dial") == {}
    assert (await store.known("dial", NOW)).failing_since is None


async def test_outbox_groups_per_channel_retries_and_records_delivery(store: Store) -> None:
    """A check's messages for one channel become one row; a failed send waits for its
    retry time, a delivered one is no longer due."""
    entries = [
        OutboxEntry("dial/low", "first", "oncall", message("low")),
        OutboxEntry("dial/card", "first", "oncall", message("card", "failure")),
        OutboxEntry("dial/low", "first", "finance", message("low")),
    ]
    await store.commit_check("dial", NOW, {}, entries, EXPIRES)
    due = await store.due(NOW)
    assert [(r.channel, r.decision, [p.alert for p in r.parts]) for r in due] == [
        ("oncall", "group", ["dial/low", "dial/card"]),
        ("finance", "first", ["dial/low"]),
    ]
    assert due[0].message.notify_type == "failure"  # the group takes its most urgent part
    assert await store.pending_by_channel() == {"oncall": 1, "finance": 1}

    oncall, finance = due
    await store.mark_failed(oncall.id, "HTTP 503", NOW + timedelta(seconds=30))
    await store.mark_delivered(finance.id, NOW)
    for row in due:
        await store.release_claim(row.channel)
    assert await store.due(NOW) == []
    assert await store.next_attempt_at() == NOW + timedelta(seconds=30)
    retried = await store.due(NOW + timedelta(seconds=30))
    assert [(r.id, r.attempts, r.last_error) for r in retried] == [(oncall.id, 1, "HTTP 503")]
    assert await store.pending_count() == 1
    assert await store.was_announced("finance", "dial/low", None)
    assert not await store.was_announced("oncall", "dial/low", None)
    assert [r.channel for r in await store.recent_notifications(10)] == ["finance", "oncall"]


async def test_announcement_belongs_to_its_firing_episode(store: Store) -> None:
    """A channel told of one firing was not told of the next: was_announced matches the
    episode (when the firing began) a resolution names."""
    began = NOW - timedelta(hours=3)
    entries = [OutboxEntry("dial/low", "first", "oncall", message("low"), episode=began)]
    await store.commit_check("dial", NOW, {}, entries, EXPIRES)
    (row,) = await store.due(NOW)
    assert row.parts[0].episode == began.isoformat()
    await store.mark_delivered(row.id, NOW)
    assert await store.was_announced("oncall", "dial/low", began.isoformat())
    assert await store.was_announced("oncall", "dial/low", None)
    assert not await store.was_announced("oncall", "dial/low", NOW.isoformat())


async def test_group_wait_gathers_later_checks_into_the_waiting_message(store: Store) -> None:
    """With group_wait, a later check's message joins the one still waiting."""
    wait = timedelta(minutes=1)
    await store.commit_check(
        "dial", NOW, {}, [OutboxEntry("dial/low", "first", "oncall", message("low"))],
        EXPIRES, group_wait=wait,
    )  # fmt: skip
    later = NOW + timedelta(seconds=20)
    await store.commit_check(
        "dial", later, {}, [OutboxEntry("dial/card", "first", "oncall", message("card"))],
        EXPIRES, group_wait=wait,
    )  # fmt: skip
    assert await store.due(later) == []
    (row,) = await store.due(NOW + wait)
    assert [p.alert for p in row.parts] == ["dial/low", "dial/card"]
    assert row.message.title == "[WARNING] dial: 2 notifications (low, card)"


async def test_group_wait_never_merges_two_accounts_messages(store: Store) -> None:
    """Messages waiting on one channel gather per account: another account's message
    gets a row of its own, under its own name."""
    wait = timedelta(minutes=1)
    for account in ("east", "west"):
        await store.commit_check(
            account, NOW, {}, [OutboxEntry(f"{account}/low", "first", "oncall", message("low"))],
            EXPIRES, group_wait=wait,
        )  # fmt: skip
    rows = await store.due(NOW + wait)
    assert [(r.alert, [p.alert for p in r.parts]) for r in rows] == [
        ("east/low", ["east/low"]),
        ("west/low", ["west/low"]),
    ]


async def test_a_restart_does_not_release_what_quiet_hours_hold(store: Store) -> None:
    """retry_now (at start-up) makes failed messages due at once, but a message held by
    quiet hours keeps waiting for their end."""
    morning = NOW + timedelta(hours=5)
    await store.commit_check(
        "dial", NOW, {}, [OutboxEntry("dial/low", "first", "oncall", message("low"), morning),
                          OutboxEntry("dial/low", "first", "finance", message("low"))], EXPIRES,
    )  # fmt: skip
    (failed,) = await store.due(NOW)
    await store.mark_failed(failed.id, "HTTP 503", NOW + timedelta(minutes=10))
    await store.release_claim(failed.channel)
    assert await store.retry_now(NOW) == 1
    assert [r.channel for r in await store.due(NOW)] == ["finance"]
    await store.release_claim("finance")
    assert [r.channel for r in await store.due(morning)] == ["oncall", "finance"]


async def test_ledger_keeps_each_item_once_and_sums_spend_by_match(store: Store) -> None:
    """Items read twice are stored once; spend sums, contributors, globs and the item
    matches read back exactly; the cursor moves at commit and old items are pruned."""
    items = [usage(5, 1200, "voice.outbound"), usage(4, 300, "sms.outbound", "+15550111"),
             usage(3, 50, "sms.inbound", "+15550111")]  # fmt: skip
    assert await store.add_ledger_items("dial", items, {items[0].key: ["big-call"]}) == 3
    assert await store.add_ledger_items("dial", items, None) == 0
    since = NOW - timedelta(hours=1)
    spend = await store.spend("dial", since, "USD")
    assert (spend.total, spend.count) == (Money(1550), 3)
    assert spend.by_number == (("+15550100", Money(1200)), ("+15550111", Money(350)))
    sms = await store.spend("dial", since, "USD", Match(fare="sms.*"))
    assert (sms.total, sms.count) == (Money(350), 2)
    assert (await store.spend("dial", since, "USD", Match(fare="sms.[io]n*"))).count == 1
    assert await store.spend_total("dial", since, "USD") == Money(1550)
    assert await store.spend_by_day("dial", since, "USD") == {"2026-11-21": Money(1550)}
    assert await store.spend_by_day("dial", since, "EUR") == {}
    assert await store.spend_currency("dial") == "USD"
    matches = await store.item_matches("dial", "big-call", 10)
    assert (matches.count, matches.total, matches.shown) == (1, Money(1200), (items[0],))

    checkpoint = LedgerCheckpoint(
        NOW, NOW - timedelta(minutes=4), ("big-call",), NOW - timedelta(minutes=4)
    )
    await store.commit_check("dial", NOW, {}, [], EXPIRES, ledger=checkpoint)
    assert await store.ledger_cursor("dial") == (NOW, NOW - timedelta(minutes=4))
    assert (await store.item_matches("dial", "big-call", 10)).count == 0
    assert (await store.spend("dial", since, "USD")).count == 2  # the oldest item pruned


async def test_every_field_of_an_item_reads_back_as_stored(store: Store) -> None:
    """Items of every provider's shape (every optional field, some, none) in one batch:
    each reads back exactly, with its absent fields absent."""
    at = NOW - timedelta(minutes=1)
    fields = LedgerItem._fields[LedgerItem._fields.index("fare") :]
    items = [
        LedgerItem(
            f"{time_key(at)}-all", "charge", at, 900, "EUR", *(f"{name} value" for name in fields)
        ),
        LedgerItem(f"{time_key(at)}-none", "payment", at, 700, "USD"),
        usage(1, 500, "voice.outbound"),
        LedgerItem(
            f"{time_key(at)}-some", "credit", at, 300, "USD", kind="card", invoice_id="in_1"
        ),
        LedgerItem(f"{time_key(at)}-empty", "usage", at, 100, "USD", fare="", number=""),
    ]
    every = {item.key: ["shown"] for item in items}
    assert await store.add_ledger_items("dial", items, every) == len(items)
    shown = await store.item_matches("dial", "shown", 10)
    assert sorted(shown.shown) == sorted(items)


async def test_a_check_starts_from_one_read_and_an_unchanged_commit_writes_nothing(
    store: Store,
) -> None:
    """`known` reads back what the single reads do, the item rules with matches waiting
    and the windows asked for; a commit given it writes only what changed."""
    items = [usage(5, 1200, "voice.outbound"), usage(4, 300, "sms.outbound")]
    await store.add_ledger_items("dial", items, {items[0].key: ["big-call"]})
    firing = AlertState(Status.FIRING, NOW - timedelta(hours=1), NOW, 1)
    checkpoint = LedgerCheckpoint(NOW, NOW - timedelta(days=1), (), NOW - timedelta(days=2))
    failing = NOW - timedelta(minutes=5)
    await store.commit_check(
        "dial", NOW, {"low": firing}, [], EXPIRES, balance=Money(4200), ledger=checkpoint,
        failing_since=failing, prune=False,
    )  # fmt: skip
    silence = await store.add_silence("low", "dial", NOW + timedelta(hours=1), "known", NOW)
    since = NOW - timedelta(hours=1)
    windows = [SpendQuery("dial", since, None, "USD"), SpendQuery("dial", since, None, "USD",
               Match(fare="sms.*"))]  # fmt: skip

    known = await store.known("dial", NOW, windows)
    assert known.cursor == (NOW, NOW - timedelta(days=2))  # no prune: whole since then
    assert (known.states, known.failing_since, known.balance) == (
        {"low": firing}, failing, Money(4200),
    )  # fmt: skip
    assert [s.id for s in known.silences] == [silence]
    assert (known.history_at, known.waiting) == (NOW, frozenset({"big-call"}))
    assert known.spent == ((1500, 2), (300, 1))
    assert [await store.spend_in(q) for q in windows] == [Money(1500), Money(300)]
    assert (await store.known("kept", NOW)).waiting == frozenset()

    before = await store.dump(TABLES)  # type: ignore[attr-defined]
    later = NOW + timedelta(minutes=1)  # the same quarter hour of balance history
    await store.commit_check(
        "dial", later, {}, [], EXPIRES, balance=Money(4200), ledger=checkpoint,
        failing_since=failing, prune=False, known=known,
    )  # fmt: skip
    assert await store.dump(TABLES) == before  # type: ignore[attr-defined]
    await store.commit_check(
        "dial", later, {}, [], EXPIRES, balance=Money(4100), ledger=checkpoint,
        failing_since=None, prune=True, known=known,
    )  # fmt: skip
    assert await store.last_balance("dial") == Money(4100)
    assert (await store.known("dial", NOW)).failing_since is None
    assert await store.ledger_cursor("dial") == (NOW, NOW - timedelta(days=1))  # pruned


async def test_windows_by_contributor_by_hour_and_where_the_history_starts(store: Store) -> None:
    """What spend_anomaly, seasonal runway and the status page read: spend in a window
    with a match, per number, prefix and fare, per hour, and the oldest stored item."""
    items = [usage(90, 1200, "voice.outbound"), usage(50, 300, "sms.intl", "+442079460001"),
             usage(20, 50, "sms.intl", "+442079460002"), usage(10, 25, "voice.outbound")]  # fmt: skip
    await store.add_ledger_items("dial", items, None)
    hour = SpendQuery("dial", NOW - timedelta(hours=1), NOW, "USD")
    assert await store.spend_in(hour) == Money(375)
    sms = hour._replace(match=Match(fare="sms.*"))
    assert await store.spend_in(sms) == Money(350)
    assert await store.spend_by(hour, "number") == {
        "+442079460001": 300, "+442079460002": 50, "+15550100": 25,
    }  # fmt: skip
    assert await store.spend_by(hour, "prefix") == {"+4420": 350, "+1555": 25}
    assert await store.spend_by(hour, "fare") == {"sms.intl": 350, "voice.outbound": 25}
    per_hour = await store.spend_per_hour("dial", NOW - timedelta(hours=2), "USD")
    assert sum(per_hour.values()) == 1575
    assert set(per_hour) <= {int(NOW.timestamp()) // 3600 - 2, int(NOW.timestamp()) // 3600 - 1}
    assert await store.ledger_starts("dial") == NOW - timedelta(minutes=90)
    assert await store.ledger_starts("other") is None


async def test_rebuilt_balance_history_never_replaces_a_reading(store: Store) -> None:
    await store.commit_check("dial", NOW, {}, [], EXPIRES, balance=Money(4000))
    earlier = [(NOW - timedelta(minutes=15 * k), Money(5000 + k)) for k in range(1, 5)]
    assert await store.add_balance_history("dial", [*earlier, (NOW, Money(1))]) == 4
    history = await store.balance_history("dial", NOW - timedelta(hours=2))
    assert [m.cents for _, m in history] == [5004, 5003, 5002, 5001, 4000]


async def test_notifications_are_searched_by_title_channel_or_rule(store: Store) -> None:
    await store.commit_check(
        "dial", NOW, {}, [OutboxEntry("dial/wallet-low", "first", "oncall", message("Low 100%")),
                          OutboxEntry("dial/spike", "first", "finance", message("Spike_x"))],
        EXPIRES,
    )  # fmt: skip
    found = {r.channel for r in await store.recent_notifications(10, "WALLET")}
    assert found == {"oncall"}
    assert {r.channel for r in await store.recent_notifications(10, "finance")} == {"finance"}
    assert await store.recent_notifications(10, "100%_") == []  # % and _ are literal
    assert len(await store.recent_notifications(10, "100%")) == 1


async def test_silences_mute_until_they_end(store: Store) -> None:
    """A silence is listed while in force and ends when told."""
    first = await store.add_silence("wallet-*", None, NOW + timedelta(hours=2), "top-up", NOW)
    await store.add_silence("card", "dial", NOW + timedelta(minutes=1), "known", NOW)
    assert [s.rule for s in await store.silences(NOW)] == ["wallet-*", "card"]
    assert [s.rule for s in await store.silences(NOW + timedelta(minutes=5))] == ["wallet-*"]
    assert await store.end_silence(first, NOW)
    assert not await store.end_silence(first, NOW)
    assert [s.rule for s in await store.silences(NOW)] == ["card"]


async def test_an_in_memory_copy_holds_the_state_and_keeps_its_writes(store: Store) -> None:
    """A dry run's copy starts as the state is and keeps what is written to it to
    itself; the state meanwhile can be written (the copy holds no lock on it)."""
    firing = AlertState(Status.FIRING, NOW, NOW, 1)
    await store.commit_check("dial", NOW, {"low": firing}, [], EXPIRES, balance=Money(4200))
    await store.add_ledger_items("dial", [usage(1, 100, "voice")], None)
    copy = await store.in_memory_copy()
    try:
        assert await copy.alert_states("dial") == {"low": firing}
        assert await copy.last_balance("dial") == Money(4200)
        await copy.commit_check(
            "dial", NOW, {"card": firing},
            [OutboxEntry("dial/card", "first", "oncall", message("card"))], EXPIRES,
        )  # fmt: skip
        await copy.add_ledger_items("dial", [usage(2, 300, "voice")], None)
        await store.commit_check("dial", NOW, {"low": AlertState()}, [], EXPIRES)
        assert (await copy.spend("dial", NOW - timedelta(hours=1), "USD")).count == 2
        assert await copy.pending_count() == 1
    finally:
        await copy.close()
    assert await store.alert_states("dial") == {}
    assert await store.pending_count() == 0
    assert (await store.spend("dial", NOW - timedelta(hours=1), "USD")).count == 1


async def test_a_write_with_a_stale_lease_writes_nothing(state_location: str) -> None:
    """Leases go to one replica at a time; after a handover the old holder's fenced
    writes raise LeaseLost and leave no trace, and the new token is larger."""
    one = await open_store(state_location, replica="r1")
    two = await open_store(state_location, replica="r2")
    try:
        assert await one.acquire_leases("r1", ["dial", "sms"], TTL) == {"dial": 1, "sms": 1}
        assert await two.acquire_leases("r2", ["dial"], TTL) == {}
        assert await two.free_accounts(["dial", "sms", "cf"]) == ["cf"]
        stale = Fence("r1", 1)
        await one.commit_check("dial", NOW, {}, [], EXPIRES, balance=Money(1), fence=stale)

        await one.release_leases("r1", ["dial"])
        assert await two.acquire_leases("r2", ["dial"], TTL) == {"dial": 2}
        with pytest.raises(LeaseLost):
            await one.commit_check(
                "dial", NOW, {"low": AlertState(Status.FIRING, NOW, NOW, 1)},
                [OutboxEntry("dial/low", "first", "oncall", message("low"))], EXPIRES,
                balance=Money(999), fence=stale,
            )  # fmt: skip
        with pytest.raises(LeaseLost):
            await one.add_ledger_items("dial", [usage(1, 100, "voice")], None, fence=stale)
        assert await two.alert_states("dial") == {}
        assert await two.pending_count() == 0
        assert await two.last_balance("dial") == Money(1)
        assert (await two.spend("dial", NOW - timedelta(hours=1), "USD")).count == 0
        assert await one.renew_leases("r1", TTL) == {"sms": 1}
        await two.commit_check("dial", NOW, {}, [], EXPIRES, fence=Fence("r2", 2))
    finally:
        await one.close()
        await two.close()


async def test_a_channel_is_delivered_by_one_replica_at_a_time(state_location: str) -> None:
    """The replica that claims a channel's due messages is the only one that gets them
    until it lets go; then another does, and the first can tell it lost the claim."""
    one = await open_store(state_location, replica="r1")
    two = await open_store(state_location, replica="r2")
    try:
        entry = OutboxEntry("dial/low", "first", "oncall", message("low"))
        await one.commit_check("dial", NOW, {}, [entry], EXPIRES)
        assert [r.channel for r in await one.due(NOW)] == ["oncall"]
        assert await two.due(NOW) == []
        assert await one.still_claimed("oncall")
        await one.release_claim("oncall")
        assert [r.channel for r in await two.due(NOW)] == ["oncall"]
        assert not await one.still_claimed("oncall")
    finally:
        await one.close()
        await two.close()


async def test_leases_spread_over_live_replicas_and_follow_them(state_location: str) -> None:
    """One replica takes every account; a second joins and gets about half once the
    first gives back its surplus; when the second leaves, the first takes all again."""
    one = await open_store(state_location, replica="r1")
    two = await open_store(state_location, replica="r2")
    accounts = ["a", "b", "c", "d"]
    first, second = LeaseKeeper(one, "r1", TTL), LeaseKeeper(two, "r2", TTL)
    try:
        assert set((await first.tick(accounts)).held) == set(accounts)
        assert (await second.tick(accounts)).held == {}  # nothing is free yet
        share = await first.tick(accounts)
        assert (len(share.held), len(share.surplus)) == (2, 2)
        await first.give_back(share.surplus)
        taken = await second.tick(accounts)
        assert set(taken.held) == set(share.surplus)
        assert all(token == 2 for token in taken.held.values())  # a new holder, a new token
        replicas = await one.replicas(TTL)
        assert {r.name: set(r.accounts) for r in replicas} == {
            "r1": set(share.held), "r2": set(share.surplus),
        }  # fmt: skip

        await second.leave()
        assert set((await first.tick(accounts)).held) == set(accounts)
    finally:
        await one.close()
        await two.close()


async def test_spend_per_day_of_schema_6_takes_its_accounts_currency(state_location: str) -> None:
    """Schema 7 keys spend per day by currency: an upgraded state keeps its daily
    spend, in the currency of the account's ledger (EUR here, not dollars)."""
    store = await open_store(state_location, replica="r1")
    euro = usage(5, 900, "voice.outbound")._replace(currency="EUR")
    await store.add_ledger_items("cf", [euro], None)
    await store.close()
    schema_6 = (
        "CREATE TABLE spend_days_v6 (account TEXT, day TEXT, cents BIGINT)",
        "INSERT INTO spend_days_v6 SELECT account, day, cents FROM spend_days",
        "DROP TABLE spend_days",
        "CREATE TABLE spend_days (account TEXT NOT NULL, day TEXT NOT NULL, "
        "cents BIGINT NOT NULL, PRIMARY KEY (account, day))",
        "INSERT INTO spend_days SELECT * FROM spend_days_v6",
        "DROP TABLE spend_days_v6",
    )
    if state_location.startswith("postgresql"):
        with psycopg.connect(state_location, autocommit=True) as conn:
            for statement in schema_6:
                conn.execute(statement)
            conn.execute("UPDATE dialwatch_schema SET version = 6")
    else:
        with sqlite3.connect(state_location) as db:
            for statement in schema_6:
                db.execute(statement)
            db.execute("PRAGMA user_version=6")
    store = await open_store(state_location, replica="r1")
    try:
        since = NOW - timedelta(hours=1)
        assert await store.spend_by_day("cf", since, "EUR") == {"2026-11-21": Money(900, "EUR")}
        assert await store.spend_by_day("cf", since, "USD") == {}
    finally:
        await store.close()


async def test_postgres_state_from_a_newer_dialwatch_is_refused(postgres_url: str) -> None:
    """A database written by a newer schema is refused, not touched."""
    store = await open_store(postgres_url, replica="r1")
    await store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE dialwatch_schema SET version = 99")
    with pytest.raises(ConfigError, match="from a newer dialwatch"):
        await open_store(postgres_url, replica="r1")


async def test_state_import_copies_a_sqlite_file_and_refuses_a_second_time(
    tmp_path: Path, postgres_url: str
) -> None:
    """`state import` copies firing alerts, silences, outbox, cursor and ledger; new ids
    go on after the copied ones; a database that holds state is refused."""
    source = tmp_path / "state.db"
    shutil.copy(RELEASED, source)
    copied = await import_sqlite(source, postgres_url, "importer")
    assert (copied["alerts"], copied["outbox"], copied["silences"], copied["ledger"]) == (
        2,
        1,
        1,
        1,
    )
    store = await open_store(postgres_url, replica="r1")
    try:
        states = await store.alert_states("dial")
        assert states["wallet-low"].status is Status.FIRING
        assert [s.reason for s in await store.silences(WRITTEN_AT)] == ["known: renewing by hand"]
        assert [r.alert for r in await store.due(WRITTEN_AT)] == ["dial/wallet-low"]
        assert (await store.ledger_cursor("dial")).newest == WRITTEN_AT - timedelta(minutes=1)  # type: ignore[union-attr]
        assert (await store.item_matches("dial", "expensive-call", 10)).count == 1
        assert await store.add_silence("x", None, WRITTEN_AT + timedelta(1), "r", WRITTEN_AT) == 2
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="already holds dialwatch state"):
        await import_sqlite(source, postgres_url, "importer")


class StoreFault:
    """A real failure of the state store, made between a send and its record: another
    connection holds SQLite's write lock, or PostgreSQL refuses and drops connections."""

    def __init__(self, location: str, admin: str | None) -> None:
        self.location, self.admin = location, admin
        self.lock: sqlite3.Connection | None = None

    def start(self) -> None:
        if self.admin is None:
            self.lock = sqlite3.connect(self.location, isolation_level=None)
            self.lock.execute("BEGIN EXCLUSIVE")
            return
        database = self.location.rsplit("/", 1)[1]
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )

    def end(self) -> None:
        if self.lock is not None:
            self.lock.execute("COMMIT")
            self.lock.close()
            return
        database = self.location.rsplit("/", 1)[1]
        assert self.admin is not None
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


@dataclass
class FailingAfterSend:
    """The real notifier, and the store failing the moment the first send succeeded."""

    inner: AppriseNotifier
    fault: StoreFault
    sends: int = 0

    async def send(self, channel: str, message: Message, parts: Sequence[Part] = ()) -> str | None:
        error = await self.inner.send(channel, message, parts)
        self.sends += 1
        if self.sends == 1:
            self.fault.start()
        return error


async def test_a_message_sent_when_the_store_fails_is_recorded_later_not_sent_again(
    state_location: str, webhook: WebhookReceiver, request: pytest.FixtureRequest
) -> None:
    """The store fails between a successful send and its record: delivery says so
    (StateUnavailable), sends nothing more while the store is down, and records the
    message once the store is back, without a second send."""
    admin = None
    if state_location.startswith("postgresql://"):
        admin = request.getfixturevalue("postgres_server")
    store = await open_store(state_location, replica="r1")
    try:
        await store.commit_check(
            "dial", NOW, {}, [OutboxEntry("dial/low", "first", "oncall", message("low"))], EXPIRES
        )
        fault = StoreFault(state_location, admin)
        channels = {"oncall": Channel.model_validate({"url": webhook.url})}
        notifier = FailingAfterSend(AppriseNotifier(channels, timeout=10, min_interval=0), fault)
        unrecorded = Unrecorded()
        with pytest.raises(StateUnavailable):
            await deliver_due(store, notifier, NOW, unrecorded)
        assert webhook.titles == ["low"]
        assert len(unrecorded.sent) == 1
        with pytest.raises(StateUnavailable):
            await deliver_due(store, notifier, NOW + timedelta(minutes=1), unrecorded)
        fault.end()
        # The store answers again once its connections are back (PostgreSQL's pool
        # reconnects on its own backoff); every pass until then fails the same way.
        for attempt in range(2, 10):
            try:
                report = await deliver_due(
                    store, notifier, NOW + timedelta(minutes=attempt), unrecorded
                )
                break
            except StateUnavailable:
                assert notifier.sends == 1
        assert (report.delivered, unrecorded.sent) == ([], {})
        assert webhook.titles == ["low"]
        assert notifier.sends == 1
        assert await store.pending_count() == 0
    finally:
        await store.close()


async def test_window_sums_from_running_totals_equal_the_items(store: Store) -> None:
    """Spend windows without a match are summed from per-minute and per-hour totals:
    for windows at odd microseconds, across hours and minutes, through late items,
    credits, another currency and prunes that cut a minute and an hour, each sum and
    count equals the items' own (a match makes the store add up the items)."""
    rng = random.Random(7)
    items: list[LedgerItem] = []
    for i in range(600):
        at = NOW - timedelta(microseconds=rng.randrange(0, 3 * 86_400_000_000))
        kind = "credit" if i % 17 == 0 else "usage"
        currency = "EUR" if i % 13 == 0 else "USD"
        items.append(
            LedgerItem(f"{time_key(at)}-{i}", kind, at, rng.randrange(1, 500), currency, "f", "n")
        )
    rng.shuffle(items)  # late items land in buckets that already have totals
    for start in range(0, len(items), 150):
        await store.add_ledger_items("dial", items[start : start + 150], None)
    await store.add_ledger_items("dial", items[:50], None)  # read again: not counted twice

    async def agree(kept: list[LedgerItem]) -> None:
        for _ in range(40):
            since = NOW - timedelta(microseconds=rng.randrange(0, 4 * 86_400_000_000))
            until = rng.choice([None, since + timedelta(microseconds=rng.randrange(1, 10**11))])
            chosen = [
                it for it in kept if it.type == "usage" and it.currency == "USD"
                and since <= it.occurred_at and (until is None or it.occurred_at < until)
            ]  # fmt: skip
            summary = await store.spend("dial", since, "USD", until=until, contributors=False)
            assert (summary.total.cents, summary.count) == (
                sum(i.cents for i in chosen),
                len(chosen),
            )
            matched = await store.spend_in(SpendQuery("dial", since, until, "USD", Match()))
            assert matched.cents == summary.total.cents

    await agree(items)
    for keep_since in (
        NOW - timedelta(hours=50, seconds=7.5),
        NOW - timedelta(hours=20, minutes=3),
    ):
        checkpoint = LedgerCheckpoint(NOW, keep_since, ())
        await store.commit_check("dial", NOW, {}, [], EXPIRES, ledger=checkpoint)
        await agree([it for it in items if it.occurred_at >= keep_since])
