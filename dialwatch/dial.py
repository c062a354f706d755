"""Dial's billing API (GET /api/v1/billing) translated into a BillingSnapshot."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, StrictBool, StrictInt, ValidationError

from dialwatch.api_client import ApiClient
from dialwatch.errors import BadResponse
from dialwatch.model import BillingSnapshot, PaymentMethod, PhoneNumber, Subscription
from dialwatch.units import Money

BILLING_PATH = "/api/v1/billing"


class _Lenient(BaseModel):
    # Unknown fields are the API growing, not an error.
    model_config = ConfigDict(extra="ignore")


class _Subscription(_Lenient):
    periodEnd: AwareDatetime
    cancelAtPeriodEnd: StrictBool
    quantity: int | None = None
    interval: str | None = None


class _Number(_Lenient):
    number: str
    nickname: str | None = None
    mode: str


class _PaymentMethod(_Lenient):
    id: str = ""
    type: str = ""
    brand: str | None = ""
    last4: str | None = ""
    expMonth: int | None = 0
    expYear: int | None = 0
    isDefault: bool = False


class _Billing(_Lenient):
    # Required: a check that cannot see these must fail, never read as zero or "none".
    balanceCents: StrictInt
    subscription: _Subscription | None
    numbers: list[_Number]
    paymentMethods: list[_PaymentMethod]
    numbersReleaseAt: AwareDatetime | None = None


def parse_billing(account: str, body: Any, url: str, taken_at: datetime) -> BillingSnapshot:
    """Validate a GET /api/v1/billing body; a body off the documented shape is BadResponse."""
    try:
        billing = _Billing.model_validate(body)
    except ValidationError as exc:
        raise BadResponse(
            f"unexpected billing response: {describe_validation(exc)}", url=url
        ) from exc
    sub = billing.subscription
    return BillingSnapshot(
        account=account,
        taken_at=taken_at,
        balance=Money(billing.balanceCents, "USD"),
        subscription=Subscription(
            period_end=sub.periodEnd,
            cancel_at_period_end=sub.cancelAtPeriodEnd,
            quantity=sub.quantity,
            interval=sub.interval,
        )
        if sub
        else None,
        numbers=tuple(PhoneNumber(n.number, n.nickname, n.mode) for n in billing.numbers),
        payment_methods=tuple(
            PaymentMethod(
                id=m.id,
                type=m.type,
                brand=m.brand or "",
                last4=m.last4 or "",
                exp_month=m.expMonth or 0,
                exp_year=m.expYear or 0,
                is_default=m.isDefault,
            )
            for m in billing.paymentMethods
        ),
        numbers_release_at=billing.numbersReleaseAt,
    )


def describe_validation(exc: ValidationError, limit: int = 3) -> str:
    """`field: what was expected` for the first few problems, without echoing input."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    ]
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


class DialProvider:
    """Reads one Dial account."""

    def __init__(self, account: str, client: ApiClient) -> None:
        self.account = account
        self._client = client

    async def fetch_billing(self, now: datetime) -> BillingSnapshot:
        return await self._client.get(
            BILLING_PATH, lambda body, url: parse_billing(self.account, body, url, now)
        )
