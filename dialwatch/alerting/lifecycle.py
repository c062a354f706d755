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
    last_notified: datetime | None = None  # None while firing: not announced yet (muted)
    notifications: int = 0  # sent for this firing, first included


@dataclass(frozen=True)
class Timing:
    hold: timedelta  # the rule's `for`
    repeat_every: timedelta | None  # None: never repeat
    send_resolved: bool
    max_repeats: int | None = None  # reminders after the first; None: no cap


def step(
    state: AlertState, active: bool, now: datetime, timing: Timing, *, muted: bool = False
) -> tuple[AlertState, Decision]:
    """Advance one alert by one observation.

    A muted alert (silenced or inhibited) still moves through its states but is not
    announced; once unmuted, a firing alert that was never announced is announced then.
    An alert that was never announced gets no resolved notice either, and one that was
    announced gets it even if muted since: whoever was told it fired learns it ended.
    """
    if not active:
        announced = state.status is Status.FIRING and state.notifications > 0
        if announced and timing.send_resolved:
            return AlertState(), Decision.RESOLVED
        return AlertState(), Decision.NONE

    since = state.active_since or now
    if state.status is not Status.FIRING and now - since < timing.hold:
        return AlertState(Status.PENDING, since), Decision.NONE
    if muted:
        return replace(state, status=Status.FIRING, active_since=since), Decision.NONE
    if state.status is not Status.FIRING or state.last_notified is None:
        return AlertState(Status.FIRING, since, now, 1), Decision.FIRST
    reminders = state.notifications - 1
    due = timing.repeat_every is not None and now - state.last_notified >= timing.repeat_every
    capped = timing.max_repeats is not None and reminders >= timing.max_repeats
    if due and not capped:
        return (
            replace(state, last_notified=now, notifications=state.notifications + 1),
            Decision.REPEAT,
        )
    return state, Decision.NONE
