"""Activity items as Dial sends them (fields of other types present as null)."""

from __future__ import annotations

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
