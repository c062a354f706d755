"""Fault injection against the real service: `dialwatch run` as a process, the Dial
simulator, a real webhook receiver, a real SQLite file on a real (tmpfs) disk.

Every case holds the README's promise: nothing lost, at most the documented duplicate
(one per message in flight at a crash), and the fault reported (log, /readyz, and the
`dialwatch-unhealthy` alert after `unhealthy_after`)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from dialwatch.cluster.outage import StateHealth
from dialwatch.simulators.dial import DialSimulator
from tests.processes import Service, dialwatch, service_env, wait_until
from tests.servers import WebhookReceiver

RULES = """
channels:
  oncall: "{webhook}"
defaults:
  notify: [oncall]
  repeat_every: 4h
  unhealthy_after: 2s
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
  - name: wallet-critical
    kind: balance_below
    threshold: "$10.00"
    severity: critical
  - name: cancelling
    kind: subscription_cancelling
"""
LOW = "[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"


def until(condition: Callable[[], bool]) -> Coroutine[Any, Any, None]:
    """wait_until with room for the faults' own waits (a 5 s lock timeout, 2 s to unhealthy)."""
    return wait_until(condition, timeout=30)


async def checks(dial: DialSimulator, count: int) -> None:
    """Wait until the service has read the API `count` more times: that many checks."""
    seen = len(dial.requests)
    await until(lambda: len(dial.requests) >= seen + count)


def outbox(state: Path, column: str) -> list[Any]:
    """One column of the state file's outbox (read-only; empty before it exists)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
            query = f"SELECT {column} FROM outbox ORDER BY id"  # noqa: S608 (the tests' own columns)
            return [value for (value,) in db.execute(query)]
    except sqlite3.OperationalError:
        return []


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real, small filesystem (8 MB tmpfs) for the state file, so it can be filled."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root; .ci/run runs as root): {done.stderr}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def env(disk: Path, dial: DialSimulator, webhook: WebhookReceiver) -> dict[str, str]:
    rules = disk.parent / "rules.yaml"
    rules.write_text(RULES.format(webhook=webhook.url))
    return service_env(dial.base_url, rules, disk / "state.db")


@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    """Every service a test starts; killed at the end if the test did not stop it."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.process.returncode is None:
            await service.kill()


# -- the state cannot be written --------------------------------------------------------


class StateFault(Protocol):
    def begin(self) -> None: ...
    def end(self) -> None: ...


@dataclass
class DiskFull:
    """Fills the filesystem under the state file to the last byte, then frees it."""

    disk: Path

    def begin(self) -> None:
        chunk = b"\0" * 65536
        with (self.disk / "ballast").open("wb", buffering=0) as ballast:
            try:
                while True:
                    ballast.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
            with contextlib.suppress(OSError):  # the last few bytes
                while True:
                    ballast.write(b"\0")

    def end(self) -> None:
        (self.disk / "ballast").unlink()


@dataclass
class Locked:
    """Another process holds the state file's write lock (as `sqlite3 state.db` with an
    open transaction would), longer than the service's 5 s busy timeout."""

    state: Path
    holder: sqlite3.Connection | None = None

    def begin(self) -> None:
        self.holder = sqlite3.connect(self.state, timeout=30, isolation_level=None)
        self.holder.execute("BEGIN IMMEDIATE")

    def end(self) -> None:
        assert self.holder is not None
        self.holder.execute("ROLLBACK")
        self.holder.close()


@pytest.mark.parametrize("fault", ["disk full", "locked"])
async def test_a_state_that_cannot_be_written_loses_nothing_and_sends_nothing_twice(
    fault: str,
    env: dict[str, str],
    disk: Path,
    dial: DialSimulator,
    webhook: WebhookReceiver,
    services: list[Service],
) -> None:
    """The store fails just after a send and before its record: the message is kept as
    sent (never sent again) and recorded once the store answers; what fired during the
    fault goes out after it; the service stops cleanly.

    A full disk fails the writes that need new space, and SQLite then reuses the space
    its failed transaction had taken, so that outage lasts a write or two. A write lock
    held by another process lasts until it is let go: /readyz says 503, the outage is
    logged once, and dialwatch-unhealthy goes straight to the channel, then resolves."""
    state = disk / "state.db"
    state_fault: StateFault = DiskFull(disk) if fault == "disk full" else Locked(state)
    sustained = isinstance(state_fault, Locked)
    dial.account.balance_cents = 4000
    service = await Service.start(env)
    services.append(service)
    await until(lambda: webhook.titles == [LOW])

    def on_receive(message: dict[str, Any]) -> None:
        if "wallet-critical" in message["title"]:
            state_fault.begin()  # sent; its record will fail

    webhook.on_receive = on_receive
    dial.account.balance_cents = 500
    await until(lambda: bool(service.logged("state.unavailable")))
    webhook.on_receive = None
    assert dial.account.subscription is not None
    dial.account.subscription["cancelAtPeriodEnd"] = True  # fires during the fault
    if sustained:
        assert await service.readyz() == 503
        await until(lambda: any("dialwatch-unhealthy" in t for t in webhook.titles))
        assert not any("cancelling" in t for t in webhook.titles)

    state_fault.end()
    await until(lambda: any("cancelling" in t for t in webhook.titles))
    await until(lambda: bool(service.logged("state.available")))
    assert await service.readyz() == 200
    await checks(dial, 2)
    await service.stop()

    titles = webhook.titles
    assert titles[:2] == [
        LOW,
        "[CRITICAL] dial / wallet-critical: wallet balance $5.00 is below $10.00",
    ]
    assert sum("wallet-critical" in t for t in titles) == 1
    assert sum("cancelling" in t for t in titles) == 1
    assert len(service.logged("notify.recorded")) == 1
    unhealthy = [t for t in titles if "dialwatch-unhealthy" in t]
    assert len(unhealthy) == (2 if sustained else 0), unhealthy  # firing, resolved
    if sustained:
        assert len(service.logged("state.unavailable")) == 1
    assert outbox(state, "delivered_at IS NOT NULL") == [1, 1, 1]


# -- a restart at every step of a delivery ----------------------------------------------


@pytest.mark.parametrize(
    ("step", "before", "copies"),
    [
        ("during the check, before it committed", 0, 1),
        ("queued, not yet delivered", 0, 1),
        ("sent, before its record", 1, 2),
        ("after its record", 1, 1),
    ],
)
async def test_a_kill_9_at_any_step_of_a_delivery_loses_nothing(
    step: str,
    before: int,
    copies: int,
    env: dict[str, str],
    disk: Path,
    dial: DialSimulator,
    webhook: WebhookReceiver,
    services: list[Service],
) -> None:
    """kill -9 at each step between reading the API and recording the send; the
    restarted service delivers the alert: once, or twice when the kill fell between
    the send and its record (the one duplicate the README allows)."""
    state = disk / "state.db"
    dial.account.balance_cents = 4000
    if step == "during the check, before it committed":
        dial.hold = asyncio.Event()
    elif step == "queued, not yet delivered":
        webhook.status = 503  # the first attempt fails; the row waits for its retry
    first = await Service.start(env)
    services.append(first)
    if step == "during the check, before it committed":
        await dial.holding.wait()
        await first.kill()
        assert dial.hold is not None
        dial.hold.set()
        dial.hold = None
    elif step == "queued, not yet delivered":
        await until(lambda: outbox(state, "attempts") == [1])
        await first.kill()
        webhook.status = 200
    elif step == "sent, before its record":
        webhook.on_receive = lambda _: first.process.kill()
        await first.process.wait()
        webhook.on_receive = None
    else:
        await until(lambda: outbox(state, "delivered_at IS NOT NULL") == [1])
        await first.kill()
    assert len(webhook.received) == before

    second = await Service.start(env)
    services.append(second)
    await until(lambda: len(webhook.received) == copies)
    await checks(dial, 3)
    await second.stop()
    assert webhook.titles == [LOW] * copies
    assert outbox(state, "delivered_at IS NOT NULL") == [1]


def test_an_outage_of_the_state_ends_when_no_loop_fails_not_when_one_succeeds(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """A store that serves some calls and not others (a damaged page, room for small
    writes only) is one outage: leases renewing while deliveries fail does not end it."""
    health, now = StateHealth(), datetime(2026, 11, 21, 12, tzinfo=UTC)
    health.failed(now, "damaged", "r1", "delivery")
    health.failed(now, "damaged", "r1", "check:dial")
    assert not health.recovered(now, "leases")
    assert not health.recovered(now, "delivery")
    health.failed(now, "damaged", "r1", "delivery")
    assert not health.recovered(now, "check:dial")
    assert health.recovered(now + timedelta(minutes=3), "delivery")
    assert [e["event"] for e in log_lines()] == ["state.unavailable", "state.available"]


# -- a damaged state file ---------------------------------------------------------------


def damage_outbox(state: Path) -> None:
    """Overwrite the outbox table's first page in the file, as a bad disk or a torn copy
    would; the rest of the file stays intact."""
    with contextlib.closing(sqlite3.connect(state, timeout=30, isolation_level=None)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page into the file itself
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox'").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    with state.open("r+b") as file:
        file.seek((root - 1) * size)
        file.write(b"\xff" * size)


async def test_a_state_file_damaged_while_running_is_reported_and_refused_at_start(
    env: dict[str, str],
    disk: Path,
    dial: DialSimulator,
    webhook: WebhookReceiver,
    services: list[Service],
) -> None:
    """Broken pages found by a running service are an outage of the state: logged with
    what to do, /readyz 503, dialwatch-unhealthy straight to the channel. At the next
    start they are found at once: exit 2 naming the file (never 1, which for `check`
    means firing), no traceback."""
    state = disk / "state.db"
    dial.account.balance_cents = 4000
    service = await Service.start(env)
    services.append(service)
    await until(lambda: webhook.titles == [LOW])
    damage_outbox(state)
    with contextlib.closing(sqlite3.connect(state, timeout=30, isolation_level=None)) as db:
        # Another writer: the service's cached pages are stale, so it reads the file again.
        db.execute("INSERT INTO silences (rule, account, ends_at, reason, created_at) "
                   "VALUES ('x', NULL, '2000-01-01T00:00:00.000000Z', 'x', '2000-01-01T00:00:00.000000Z')")  # fmt: skip
    dial.account.balance_cents = 500
    await until(lambda: any("dialwatch-unhealthy" in t for t in webhook.titles))
    await checks(dial, 2)  # leases still renew (their pages are whole): one outage all along
    assert not service.logged("state.available")
    (outage,) = service.logged("state.unavailable")
    assert "the state file is damaged (database disk image is malformed)" in outage["error"]
    assert "restore it from a backup" in outage["error"]
    assert await service.readyz() == 503
    await service.stop()

    for command in ("run", "check"):
        ran = await dialwatch(command, env=env)
        assert ran.code == 2, (command, ran.err)
        assert f"{state}: the state file is damaged" in ran.err
        assert "Traceback" not in ran.out + ran.err


# -- the wall clock stepped back and forward ---------------------------------------------

FAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))


def stepped(env: dict[str, str], offset_file: Path) -> dict[str, str]:
    """The service under libfaketime: its wall clock is the real one plus the offset in
    `offset_file` (read at every call); its monotonic clock is left alone, as when NTP
    or a VM resume steps a real host's clock."""
    if not FAKETIME:
        pytest.skip("needs libfaketime (apt-get install faketime; .ci/run installs it)")
    offset_file.write_text("+0\n")
    return {
        **env,
        "LD_PRELOAD": FAKETIME[0],
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


async def test_a_stepped_wall_clock_stalls_nothing_and_repeats_only_as_its_time_says(
    env: dict[str, str],
    disk: Path,
    dial: DialSimulator,
    webhook: WebhookReceiver,
    services: list[Service],
) -> None:
    """A message waiting for its retry when the clock steps back two hours goes out at
    once, not two hours late; a step forward past repeat_every sends one reminder, no
    more; both steps are logged, and the service stays healthy."""
    offset = disk.parent / "faketime"
    webhook.status = 503
    dial.account.balance_cents = 4000
    service = await Service.start(stepped(env, offset))
    services.append(service)
    await until(lambda: outbox(disk / "state.db", "attempts") == [1])  # retry in 30 s

    offset.write_text("-2h\n")
    webhook.status = 200
    await until(lambda: webhook.titles == [LOW])
    await checks(dial, 2)
    assert webhook.titles == [LOW]

    offset.write_text("+5h\n")  # five hours after the alert fired, by the service's clock
    await until(lambda: len(webhook.received) == 2)
    await checks(dial, 3)
    assert await service.readyz() == 200
    await service.stop()

    assert webhook.titles == [LOW, LOW.replace("[WARNING]", "[WARNING] still firing:")]
    assert [e["by"] for e in service.logged("clock.stepped")] == ["-2h", "+7h"]
    assert not any("dialwatch-unhealthy" in t for t in webhook.titles)
