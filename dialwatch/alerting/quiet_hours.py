"""Quiet hours: when does an instant inside the named time intervals get out of them.

Pure: the intervals and the instant are passed in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dialwatch.rules.time_intervals import TimeInterval

STEP = timedelta(minutes=1)  # window ends are found to the minute
HORIZON = timedelta(days=8)  # no window of a weekly pattern lasts longer


def in_quiet_hours(intervals: tuple[TimeInterval, ...], moment: datetime) -> bool:
    return any(interval.contains(moment) for interval in intervals)


def quiet_until(intervals: tuple[TimeInterval, ...], moment: datetime) -> datetime | None:
    """The first minute after `moment` outside every interval, or None if not inside one."""
    if not in_quiet_hours(intervals, moment):
        return None
    at = moment.astimezone(UTC).replace(second=0, microsecond=0)
    limit = moment + HORIZON
    while at < limit:
        at += STEP
        if not in_quiet_hours(intervals, at):
            return at
    return limit
