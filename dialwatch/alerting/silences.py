"""Silences: a rule (a glob) muted on one account or on all, until a set time. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Silence:
    """Mutes the alerts of rules matching `rule` (a glob), on `account` or on all."""

    id: int
    rule: str
    account: str | None
    ends_at: datetime
    reason: str
    created_at: datetime

    def mutes(self, rule: str, account: str) -> bool:
        return fnmatchcase(rule, self.rule) and self.account in (None, account)


def silenced_by(silences: Sequence[Silence], rule: str, account: str) -> int | None:
    """The first silence in force that mutes `rule` on `account`, if any."""
    return next((s.id for s in silences if s.mutes(rule, account)), None)
