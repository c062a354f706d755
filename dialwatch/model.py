"""What dialwatch knows about an account after one check, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
