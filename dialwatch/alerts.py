"""The alert lifecycle, as in Alertmanager: inactive -> pending (for) -> firing -> resolved.

Pure: `step` takes the previous state, whether the condition holds, and `now`, and
returns the next state with the reason to notify (a value that is logged and tested).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class Decision(StrEnum):
    """Why a notification goes out now, or NONE."""

    FIRST = "first"
    REPEAT = "repeat"
    RESOLVED = "resolved"
    EVENT = "event"  # new ledger items matched an item rule: no state, just news
    NONE = "none"


@dataclass(frozen=True)
class AlertState:
    status: Status = Status.INACTIVE
    active_since: datetime | None = None  # when the condition started to hold
    last_notified: datetime | None = None
    notifications: int = 0  # sent for this firing, first included


@dataclass(frozen=True)
class Timing:
    hold: timedelta  # the rule's `for`
    repeat_every: timedelta | None  # None: never repeat
    send_resolved: bool


def step(
    state: AlertState, active: bool, now: datetime, timing: Timing
) -> tuple[AlertState, Decision]:
    """Advance one alert by one observation."""
    if not active:
        if state.status is Status.FIRING:
            decision = Decision.RESOLVED if timing.send_resolved else Decision.NONE
            return AlertState(), decision
        return AlertState(), Decision.NONE

    since = state.active_since or now
    if state.status is Status.FIRING:
        assert state.last_notified is not None
        due = timing.repeat_every is not None and now - state.last_notified >= timing.repeat_every
        if due:
            return (
                replace(state, last_notified=now, notifications=state.notifications + 1),
                Decision.REPEAT,
            )
        return state, Decision.NONE
    if now - since >= timing.hold:
        return AlertState(Status.FIRING, since, now, 1), Decision.FIRST
    return AlertState(Status.PENDING, since), Decision.NONE
