"""Rules evaluated against a snapshot. Pure: no I/O, `now` comes from the snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dialwatch.config import (
    BalanceBelow,
    NumbersAtRisk,
    PaymentMethodExpiring,
    Rule,
    SubscriptionCancelling,
)
from dialwatch.model import BillingSnapshot, PaymentMethod
from dialwatch.units import Money


@dataclass(frozen=True)
class Finding:
    """Whether a rule's condition holds now, and the facts a person needs to act on it."""

    active: bool
    summary: str
    facts: tuple[tuple[str, str], ...] = ()


def evaluate(
    rule: Rule, snap: BillingSnapshot, *, was_active: bool, previous_balance: Money | None
) -> Finding:
    """Evaluate one rule. `was_active` lets thresholds resolve with hysteresis."""
    match rule:
        case BalanceBelow():
            return _balance_below(rule, snap, was_active, previous_balance)
        case SubscriptionCancelling():
            return _subscription_cancelling(snap)
        case NumbersAtRisk():
            return _numbers_at_risk(snap)
        case PaymentMethodExpiring():
            return _payment_method_expiring(rule, snap)


def _balance_below(
    rule: BalanceBelow, snap: BillingSnapshot, was_active: bool, previous: Money | None
) -> Finding:
    balance, threshold = snap.balance, rule.threshold
    clear_at = threshold + rule.clear_margin
    # Once firing, the balance must climb clear of the threshold to resolve, so a
    # balance wobbling around it does not flap.
    active = balance < (clear_at if was_active else threshold)
    if active:
        summary = f"balance {balance} is below {threshold}"
    elif was_active:
        summary = f"balance {balance} is back above {threshold}"
    else:
        summary = f"balance {balance} is at or above {threshold}"
    facts = [("Balance", str(balance)), ("Threshold", str(threshold))]
    if active and was_active and balance >= threshold:
        facts.append(("Resolves at", f"{clear_at} or more"))
    if previous is not None and previous != balance:
        change = balance.cents - previous.cents
        direction = "up" if change > 0 else "down"
        facts.append(
            (
                "Change",
                f"{direction} {Money(abs(change), balance.currency)} since the last check "
                f"(was {previous})",
            )
        )
    return Finding(active, summary, tuple(facts))


def _subscription_cancelling(snap: BillingSnapshot) -> Finding:
    sub = snap.subscription
    if sub is None:
        return Finding(False, "no subscription (the account is pay-as-you-go)")
    if not sub.cancel_at_period_end:
        return Finding(False, f"subscription renews on {_date(sub.period_end)}")
    facts = [
        ("Period ends", _date(sub.period_end)),
        ("Time left", _days_left(sub.period_end, snap.taken_at)),
    ]
    if sub.quantity is not None:
        facts.append(("Numbers covered", f"{sub.quantity} ({sub.interval or 'unknown interval'})"))
    facts.append(("Then", "numbers revert to pay-as-you-go and bill the wallet"))
    return Finding(
        True,
        f"subscription cancels at period end on {_date(sub.period_end)} "
        f"({_days_left(sub.period_end, snap.taken_at)})",
        tuple(facts),
    )


def _numbers_at_risk(snap: BillingSnapshot) -> Finding:
    release_at = snap.numbers_release_at
    if release_at is None:
        return Finding(False, "no numbers scheduled for release")
    numbers = ", ".join(n.number for n in snap.payg_numbers) or "none listed"
    return Finding(
        True,
        f"numbers will be released on {_date(release_at)} ({_days_left(release_at, snap.taken_at)}) "
        f"unless the balance ({snap.balance}) is topped up",
        (
            ("Release date", _date(release_at)),
            ("Time left", _days_left(release_at, snap.taken_at)),
            ("Balance", str(snap.balance)),
            ("PAYG numbers", numbers),
        ),
    )


def card_expires_at(method: PaymentMethod) -> datetime | None:
    """The first instant a card no longer works: the start of the month after expiry."""
    if method.exp_year <= 0 or not 1 <= method.exp_month <= 12:
        return None  # not a card (Link, bank account): it does not expire
    year, month = divmod(method.exp_month, 12)
    return datetime(method.exp_year + year, month + 1, 1, tzinfo=UTC)


def _payment_method_expiring(rule: PaymentMethodExpiring, snap: BillingSnapshot) -> Finding:
    method = snap.default_payment_method
    if method is None:
        payg = snap.payg_numbers
        if payg:
            return Finding(
                True,
                f"no payment method on file while {len(payg)} number(s) are pay-as-you-go",
                (("PAYG numbers", ", ".join(n.number for n in payg)),),
            )
        return Finding(False, "no payment method on file, and no pay-as-you-go numbers")
    expires_at = card_expires_at(method)
    if expires_at is None:
        return Finding(False, f"default payment method {method.label} does not expire")
    expiry = f"{method.exp_month:02d}/{method.exp_year}"
    left = expires_at - snap.taken_at
    if left > rule.within:
        return Finding(False, f"default payment method {method.label} expires {expiry}")
    state = (
        "has expired"
        if left <= timedelta(0)
        else f"expires {expiry} ({_days_left(expires_at, snap.taken_at)})"
    )
    return Finding(
        True,
        f"default payment method {method.label} {state}",
        (
            ("Payment method", method.label),
            ("Expires", expiry),
            ("Warning window", f"{rule.within.days} days"),
        ),
    )


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days_left(moment: datetime, now: datetime) -> str:
    seconds = (moment - now).total_seconds()
    if seconds <= 0:
        return "already passed"
    days = int(seconds // 86400)
    if days == 0:
        return "less than a day left"
    return f"{days} day{'s' if days != 1 else ''} left"
