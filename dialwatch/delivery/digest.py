"""Digests: a daily or weekly summary per account, at a set local time. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dialwatch.delivery.messages import Message
from dialwatch.rules.schema import Digest
from dialwatch.units import Money, format_duration


def due_at(digest: Digest, now: datetime) -> datetime:
    """The latest scheduled time at or before `now` (the digest covers the period to it)."""
    zone = ZoneInfo(digest.timezone)
    local = now.astimezone(zone)
    for back in range(8):
        day = (local - timedelta(days=back)).date()
        if digest.every == "week" and day.weekday() != digest.weekday:
            continue
        at = datetime.combine(day, digest.at, tzinfo=zone)
        if at <= local:
            return at.astimezone(UTC)
    raise AssertionError("a weekly schedule repeats within 8 days")


def period(digest: Digest) -> timedelta:
    return timedelta(days=7 if digest.every == "week" else 1)


def history_needed(digests: Sequence[Digest], now: datetime) -> timedelta:
    """How far back the stored ledger must reach for every digest's next summary: to the
    start of the period that ends at its next scheduled time."""
    return max(
        (now - (due_at(digest, now) - period(digest)) for digest in digests),
        default=timedelta(0),
    )


@dataclass(frozen=True)
class DigestFacts:
    """What a digest reports about one account, read from the state store."""

    account: str
    balance: Money | None
    balance_before: Money | None
    spend_by_day: Mapping[str, Money]
    top_numbers: tuple[tuple[str, Money], ...]
    top_items: tuple[tuple[str, Money], ...]
    alerts: Mapping[str, int]  # rule -> times it fired (first notifications) in the period
    spend_total: Money | None  # None: no spend rule reads the ledger


def compose_digest(digest: Digest, facts: DigestFacts, since: datetime, until: datetime) -> Message:
    zone = ZoneInfo(digest.timezone)
    label = "weekly" if digest.every == "week" else "daily"
    balance = facts.balance
    change = ""
    if balance is not None and facts.balance_before is not None:
        delta = balance.cents - facts.balance_before.cents
        direction = "up" if delta > 0 else "down" if delta < 0 else "unchanged"
        change = (
            f" ({direction} {Money(abs(delta), balance.currency)})" if delta else " (unchanged)"
        )
    title = (
        f"[INFO] {facts.account} {label} digest {until.astimezone(zone):%Y-%m-%d}: "
        f"balance {balance if balance else 'unknown'}{change}"
    )
    lines = [
        f"Account: {facts.account}",
        f"Period: {since.astimezone(zone):%Y-%m-%d %H:%M} to {until.astimezone(zone):%Y-%m-%d %H:%M} "
        f"{digest.timezone}",
        f"Balance: {balance if balance else 'unknown'}"
        + (f", was {facts.balance_before}{change}" if facts.balance_before is not None else ""),
    ]
    if facts.spend_total is None:
        lines.append("Spend: not watched (add a spend rule to read the activity ledger)")
    else:
        days = ", ".join(f"{day} {amount}" for day, amount in facts.spend_by_day.items())
        lines += [
            f"Spend: {facts.spend_total} in the period",
            f"Spend by UTC day: {days or 'none'}",
            "Top numbers: " + (_list(facts.top_numbers) or "none"),
            "Top items: " + (_list(facts.top_items) or "none"),
        ]
        spent = facts.spend_total
        if balance is not None and balance.currency != spent.currency:
            lines.append(
                f"Runway: not estimated (the balance is in {balance.currency}, the spend in "
                f"{spent.currency})"
            )
        elif balance is not None and spent.cents > 0:
            seconds = int(period(digest).total_seconds())
            per_day = Money(spent.cents * 86400 // seconds, spent.currency)
            left = timedelta(seconds=max(0, balance.cents) * seconds // spent.cents)
            lines.append(
                f"Runway: about {format_duration(timedelta(hours=left // timedelta(hours=1)))} "
                f"at {per_day}/day"
            )
    fired = ", ".join(f"{rule} ({count})" for rule, count in sorted(facts.alerts.items()))
    lines.append(f"Alerts fired: {fired or 'none'}")
    return Message(title, "\n".join(lines), "info")


def _list(rows: tuple[tuple[str, Money], ...]) -> str:
    return ", ".join(f"{name} {amount}" for name, amount in rows)
