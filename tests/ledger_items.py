"""Activity items as Dial sends them (fields of other types present as null)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tests.conftest import START


def at(minutes: float, base: datetime = START) -> str:
    """An occurredAt `minutes` after `base` (negative: before), as Dial writes it."""
    return (base + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def usage(
    when: str,
    cents: int,
    *,
    fare: str = "voice.outbound.minute",
    number: str = "+14155550123",
    call: str | None = None,
    attribution: str = "wallet",
) -> dict[str, Any]:
    return {
        "type": "usage",
        "occurredAt": when,
        "amountCents": cents,
        "totalCents": cents,
        "fareName": fare,
        "number": number,
        "billedQuantity": 1,
        "attribution": attribution,
        "phoneNumberId": "pn_8f3a2b1c",
        "callId": call,
        "messageId": None,
    }


def credit(
    when: str, cents: int, kind: str = "card", invoice: str | None = "in_1"
) -> dict[str, Any]:
    return {"type": "credit", "occurredAt": when, "amountCents": cents, "kind": kind,
            "invoiceId": invoice}  # fmt: skip


def payment(when: str, cents: int, reason: str = "subscription_cycle") -> dict[str, Any]:
    return {"type": "payment", "occurredAt": when, "amountCents": cents, "invoiceId": "in_9",
            "reason": reason}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """A generated ledger item, and the true wallet balance right after it."""

    at: datetime
    item: dict[str, Any]
    balance: int


def dial_history(
    start: datetime, end: datetime, opening: int, *, seed: int = 7, mean_gap: float = 60.0
) -> list[Entry]:
    """A Dial ledger from `start` to `end`, oldest first, with its true balance after
    every item: calls and SMS billed to the wallet, usage the plan covers (entitlement),
    card top-ups when the wallet runs low, monthly subscription payments, an expensive
    call now and then, and tie groups (2 to 5 items at one instant) often enough that
    some straddle a page boundary."""
    rng = random.Random(seed)
    entries, balance, when, serial = [], opening, start, 0
    while True:
        when += timedelta(seconds=rng.expovariate(1 / mean_gap))
        if when >= end:
            return entries
        group = rng.choice((1, 1, 1, 1, 2, 3, 5))
        for _ in range(group):
            serial += 1
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            roll = rng.random()
            if balance < 3_000 and roll < 0.05:
                item, balance = credit(stamp, 20_000, invoice=f"in_{serial}"), balance + 20_000
            elif roll < 0.001:
                item = payment(stamp, 4_900)
            elif roll < 0.15:
                cents = rng.randint(1, 40)
                item = usage(stamp, cents, fare="sms.outbound", call=None,
                             attribution="entitlement")  # fmt: skip
            else:
                cents = rng.randint(400, 900) if roll > 0.995 else rng.randint(1, 60)
                fare = "voice.outbound.minute" if roll < 0.7 else "sms.outbound"
                item = usage(stamp, cents, fare=fare, call=f"c{serial}")
                balance -= cents
            entries.append(
                Entry(datetime.fromisoformat(stamp.replace("Z", "+00:00")), item, balance)
            )
