"""The alert state machine: each step's next state and the reason it notifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialwatch.alerts import AlertState, Decision, Status, Timing, step

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
