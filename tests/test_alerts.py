"""The alert state machine: each step's next state and the reason it notifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialwatch.alerting.lifecycle import AlertState, Decision, Status, Timing, step

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)
FIRING = AlertState(Status.FIRING, T0, T0, 1)


@pytest.mark.parametrize(
    ("state", "active", "now", "timing", "status", "decision"),
    [
        (AlertState(), False, T0, Timing(0 * MIN, None, True), Status.INACTIVE, Decision.NONE),
        (AlertState(), True, T0, Timing(0 * MIN, None, True), Status.FIRING, Decision.FIRST),
        (AlertState(), True, T0, Timing(5 * MIN, None, True), Status.PENDING, Decision.NONE),
        (
            AlertState(Status.PENDING, T0),
            True,
            T0 + 4 * MIN,
            Timing(5 * MIN, None, True),
            Status.PENDING,
            Decision.NONE,
        ),
        (
            AlertState(Status.PENDING, T0),
            True,
            T0 + 5 * MIN,
            Timing(5 * MIN, None, True),
            Status.FIRING,
            Decision.FIRST,
        ),
        (
            AlertState(Status.PENDING, T0),
            False,
            T0 + 4 * MIN,
            Timing(5 * MIN, None, True),
            Status.INACTIVE,
            Decision.NONE,
        ),
        (
            FIRING,
            True,
            T0 + 59 * MIN,
            Timing(0 * MIN, 60 * MIN, True),
            Status.FIRING,
            Decision.NONE,
        ),
        (
            FIRING,
            True,
            T0 + 60 * MIN,
            Timing(0 * MIN, 60 * MIN, True),
            Status.FIRING,
            Decision.REPEAT,
        ),
        (FIRING, True, T0 + 600 * MIN, Timing(0 * MIN, None, True), Status.FIRING, Decision.NONE),
        (FIRING, False, T0 + MIN, Timing(0 * MIN, None, True), Status.INACTIVE, Decision.RESOLVED),
        (FIRING, False, T0 + MIN, Timing(0 * MIN, None, False), Status.INACTIVE, Decision.NONE),
    ],
    ids=[
        "quiet",
        "fires-at-once",
        "holds-pending",
        "still-pending",
        "pending-fires-after-for",
        "pending-clears-silently",
        "no-repeat-inside-window",
        "repeats-after-window",
        "never-repeats",
        "resolves",
        "resolves-silently-without-send_resolved",
    ],
)
def test_step(
    state: AlertState,
    active: bool,
    now: datetime,
    timing: Timing,
    status: Status,
    decision: Decision,
) -> None:
    """One observation moves the alert as Alertmanager would."""
    new_state, got = step(state, active, now, timing)
    assert (new_state.status, got) == (status, decision)


def test_repeat_counts_reminders_and_restarts_the_window() -> None:
    """A reminder bumps the count and the next one is due a full window later."""
    timing = Timing(timedelta(0), 60 * MIN, True)
    state, _ = step(FIRING, True, T0 + 60 * MIN, timing)
    assert (state.notifications, state.last_notified) == (2, T0 + 60 * MIN)
    assert step(state, True, T0 + 119 * MIN, timing)[1] is Decision.NONE
    assert step(state, True, T0 + 120 * MIN, timing)[1] is Decision.REPEAT


UNANNOUNCED = AlertState(Status.FIRING, T0, None, 0)


@pytest.mark.parametrize(
    ("state", "active", "muted", "status", "decision", "notifications"),
    [
        (AlertState(), True, True, Status.FIRING, Decision.NONE, 0),
        (UNANNOUNCED, True, True, Status.FIRING, Decision.NONE, 0),
        (UNANNOUNCED, True, False, Status.FIRING, Decision.FIRST, 1),
        (UNANNOUNCED, False, False, Status.INACTIVE, Decision.NONE, 0),
        (FIRING, True, True, Status.FIRING, Decision.NONE, 1),
        (FIRING, False, True, Status.INACTIVE, Decision.RESOLVED, 0),
    ],
    ids=[
        "fires-muted-unannounced",
        "stays-unannounced-while-muted",
        "announced-when-unmuted",
        "never-announced-never-resolved",
        "no-reminder-while-muted",
        "announced-then-muted-still-resolves",
    ],
)
def test_muted_alerts_change_state_but_are_not_announced(
    state: AlertState,
    active: bool,
    muted: bool,
    status: Status,
    decision: Decision,
    notifications: int,
) -> None:
    """Silenced alerts fire quietly and are announced once the silence ends, if still on;
    one announced before it was muted still gets its resolution (incidents close)."""
    new_state, got = step(
        state, active, T0 + 600 * MIN, Timing(0 * MIN, 60 * MIN, True), muted=muted
    )
    assert (new_state.status, got, new_state.notifications) == (status, decision, notifications)


def test_max_repeats_caps_reminders() -> None:
    """With max_repeats 2, the third reminder never comes; resolution is still sent."""
    timing = Timing(timedelta(0), 60 * MIN, True, max_repeats=2)
    state, decisions = FIRING, []
    for hour in range(1, 5):
        state, decision = step(state, True, T0 + hour * 60 * MIN, timing)
        decisions.append(decision)
    assert decisions == [Decision.REPEAT, Decision.REPEAT, Decision.NONE, Decision.NONE]
    assert step(state, False, T0 + 300 * MIN, timing)[1] is Decision.RESOLVED
