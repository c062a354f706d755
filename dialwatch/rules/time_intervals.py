"""Named time intervals, as the rules file writes them: is an instant inside one.

Pure. A range whose start is after its end crosses midnight and belongs to the day it
starts: "friday 22:00-07:00" covers Saturday 01:00.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekdays(value: object) -> tuple[int, ...]:
    """["monday-friday", "sunday"] -> (0, 1, 2, 3, 4, 6)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("weekdays is a list such as [monday-friday, sunday]")
    days: list[int] = []
    for item in items:
        first, _, last = str(item).lower().partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"{item!r} is not a weekday or range; use e.g. monday-friday")
        start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        days += [d % 7 for d in range(start, end + (7 if end < start else 0) + 1)]
    return tuple(sorted(set(days)))


def _clock(value: object) -> time:
    text = str(value)
    if text == "24:00":
        return time.max
    try:
        return time.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time of day; write it like 22:00") from exc


def _zone(value: object) -> str:
    try:
        ZoneInfo(str(value))
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"unknown timezone {value!r}; use an IANA name such as Europe/Berlin"
        ) from exc
    return str(value)


def _day_of_month(value: object) -> int:
    if not isinstance(value, int) or not 1 <= value <= 31:
        raise ValueError("days_of_month are numbers from 1 to 31")
    return value


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Annotated[time, PlainValidator(_clock)]
    end: Annotated[time, PlainValidator(_clock)]


class TimeInterval(BaseModel):
    """An instant is inside when every field given matches (no `times`: the whole day)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weekdays: Annotated[tuple[int, ...], BeforeValidator(_weekdays)] = ()
    times: tuple[TimeRange, ...] = ()
    days_of_month: tuple[Annotated[int, PlainValidator(_day_of_month)], ...] = ()
    timezone: Annotated[str, PlainValidator(_zone)] = "UTC"

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(ZoneInfo(self.timezone))
        now = local.time().replace(tzinfo=None)
        if not self.times:
            return self._day_matches(local.date())
        for span in self.times:
            if span.start <= span.end:
                if span.start <= now < span.end and self._day_matches(local.date()):
                    return True
            elif now >= span.start and self._day_matches(local.date()):
                return True  # the evening part, on the day the range starts
            elif now < span.end and self._day_matches(local.date() - timedelta(days=1)):
                return True  # the morning part belongs to the day before
        return False

    def _day_matches(self, day: date) -> bool:
        return (not self.weekdays or day.weekday() in self.weekdays) and (
            not self.days_of_month or day.day in self.days_of_month
        )
