"""What dialwatch knows about an account after one check, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from dialwatch.clock import to_micros
from dialwatch.units import Money


@dataclass(frozen=True)
class Subscription:
    period_end: datetime
    cancel_at_period_end: bool
    quantity: int | None
    interval: str | None


@dataclass(frozen=True)
class PhoneNumber:
    number: str
    nickname: str | None
    mode: str  # "PAYG", "FIXED", or a value the API added later


@dataclass(frozen=True)
class PaymentMethod:
    id: str
    type: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool

    @property
    def label(self) -> str:
        if self.last4:
            return f"{self.brand or self.type} ending {self.last4}"
        return self.type


@dataclass(frozen=True)
class BillingSnapshot:
    """One account's billing status, read at `taken_at`."""

    account: str
    taken_at: datetime
    balance: Money
    subscription: Subscription | None
    numbers: tuple[PhoneNumber, ...]
    payment_methods: tuple[PaymentMethod, ...]
    numbers_release_at: datetime | None

    @property
    def default_payment_method(self) -> PaymentMethod | None:
        for method in self.payment_methods:
            if method.is_default:
                return method
        # The API lists the default first; with no flag set, the first is what Stripe uses.
        return self.payment_methods[0] if self.payment_methods else None

    @property
    def payg_numbers(self) -> tuple[PhoneNumber, ...]:
        return tuple(n for n in self.numbers if n.mode == "PAYG")


def time_key(moment: datetime) -> str:
    """The start of a ledger key: the time in fixed-width hex, so keys sort by time."""
    return f"{to_micros(moment):016x}"


class LedgerItem(NamedTuple):
    """One activity item: usage (spend), a credit or a payment, with an exact amount.

    `key` identifies the item across reads: the API gives items no id, so it is its
    time, a digest of its content, and its rank among identical items at that instant.
    A NamedTuple, not a frozen dataclass: a backlog makes hundreds of thousands.
    """

    key: str
    type: str  # usage | credit | payment, or a type the API added later
    occurred_at: datetime
    cents: int  # usage: totalCents; credit and payment: amountCents
    currency: str = "USD"
    fare: str | None = None
    number: str | None = None
    attribution: str | None = None
    kind: str | None = None
    invoice_id: str | None = None
    reason: str | None = None

    @property
    def amount(self) -> Money:
        return Money(self.cents, self.currency)


@dataclass(frozen=True)
class SpendSummary:
    """Usage spend since `since`, with the biggest contributors."""

    since: datetime
    total: Money
    count: int
    by_number: tuple[tuple[str, Money], ...]
    by_fare: tuple[tuple[str, Money], ...]


@dataclass(frozen=True)
class ItemMatches:
    count: int
    total: Money
    shown: tuple[LedgerItem, ...]
