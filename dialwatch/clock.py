"""The one place that reads the wall clock; everything else is handed `now`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ClockSteps:
    """Notices the wall clock being stepped (NTP correcting a wrong clock, a VM resumed
    or restored): since the last look it moved apart from the monotonic clock by more
    than `tolerance`. Times written by the old clock (when to retry) are off by the step."""

    def __init__(
        self,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
        tolerance: timedelta = timedelta(seconds=30),
    ) -> None:
        self._clock, self._monotonic, self._tolerance = clock, monotonic, tolerance
        self._offset = self._read()

    def _read(self) -> datetime:
        return self._clock.now() - timedelta(seconds=self._monotonic())

    def step(self) -> timedelta | None:
        """How far the wall clock was stepped since the last call, if it was."""
        offset = self._read()
        moved, self._offset = offset - self._offset, offset
        return moved if abs(moved) > self._tolerance else None


def to_iso(moment: datetime) -> str:
    """A fixed-width UTC timestamp that sorts as text (used as stored state)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
