"""What dialwatch knows about an account after one check, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
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
class QuotaPeriod:
    """A plan's usage in one calendar period (HookBridge: a UTC month)."""

    start: date
    end: date  # the last day in the period
    used: int
    plan_limit: int | None  # None: unlimited
    overage: int


@dataclass(frozen=True)
class BillingSnapshot:
    """One account's billing status, read at `taken_at`, in every provider's terms.

    `balance` is what the account can still spend (Dial: the wallet in USD; Mifumo: SMS
    credits), `balance_meaning` says which; None where the provider has no balance.
    `quota` is this period's plan usage where the provider meters one. The rest is
    Dial's subscription and payment side, empty elsewhere.
    """

    account: str
    taken_at: datetime
    balance: Money | None
    subscription: Subscription | None = None
    numbers: tuple[PhoneNumber, ...] = ()
    payment_methods: tuple[PaymentMethod, ...] = ()
    numbers_release_at: datetime | None = None
    balance_meaning: str = "wallet balance"
    quota: QuotaPeriod | None = None

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


# Ledger item types that are money going out, which spend rules add up.
SPEND_TYPES = ("usage", "charge")
# The normalized types every provider maps its items into.
ITEM_TYPES = ("usage", "charge", "purchase", "credit", "payment")


class LedgerItem(NamedTuple):
    """One ledger item with an exact amount: usage or a charge (spend), a purchase, a
    credit or a payment.

    `key` identifies the item across reads and starts with its time, so keys sort by
    time. Where the API gives an id it is the time and the id; Dial gives none, so there
    it is the time, a digest of the content, and the rank among identical items.
    A NamedTuple, not a frozen dataclass: a backlog makes hundreds of thousands.
    """

    key: str
    type: str  # one of ITEM_TYPES, or a type the API added later
    occurred_at: datetime
    cents: int  # minor units; spend is positive whatever sign the API uses
    currency: str = "USD"
    fare: str | None = None
    number: str | None = None
    attribution: str | None = None
    kind: str | None = None
    invoice_id: str | None = None
    reason: str | None = None
    action: str | None = None  # Cloudflare: what the charge is for (e.g. subscription)
    description: str | None = None
    zone: str | None = None

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


@dataclass
class ActivityStats:
    """What one read of the ledger cost, and what it could not read."""

    requests: int = 0
    # Instants where one filter's page was all one instant: Dial's timestamp cursor
    # cannot page inside a single instant, so items there may be out of reach.
    truncated: list[str] = field(default_factory=list)
