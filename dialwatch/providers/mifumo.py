"""Mifumo SMS: the SMS credit balance and the billing history, in dialwatch's model.

GET /api/integration/v1/sms/balance/ gives credits; GET /api/billing/history/ pages by
number (`page`, `page_size` up to 100, `count`, `next`) with float amounts in currency
units, negative for usage, which are converted exactly (usage becomes positive spend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

from pydantic import AwareDatetime, Field, field_validator

from dialwatch.errors import RequestRejected
from dialwatch.model import ActivityStats, BillingSnapshot, LedgerItem, time_key
from dialwatch.providers.base import SPEND_KINDS, ProviderPlugin
from dialwatch.providers.http import AccountReader, Int64, Lenient, Priced, json_object
from dialwatch.providers.pages import NumberedPage, read_numbered
from dialwatch.units import CREDITS, Money

BALANCE_PATH = "/api/integration/v1/sms/balance/"
HISTORY_PATH = "/api/billing/history/"
PAGE_SIZE = 100  # the documented maximum
# Records that moved no money; anything else (completed, pending, new values) counts.
NOT_MONEY = ("failed", "cancelled", "canceled", "rejected")


def unit(currency: str) -> str:
    """The balance's unit: "credits" for SMS credits, else an ISO currency code."""
    return CREDITS if currency.strip().lower() in ("credit", "credits") else currency.upper()


class _Balance(Priced):
    amount: Decimal = Field(alias="balance")
    currency: str = CREDITS

    @property
    def unit(self) -> str:
        return unit(self.currency)


class _Record(Priced):
    id: str
    type: str
    description: str | None = None
    status: str | None = None
    created_at: AwareDatetime

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    def item(self) -> LedgerItem:
        kind = self.type.lower()
        return LedgerItem(
            key=f"{time_key(self.created_at)}-{self.id}",
            type=kind,
            occurred_at=self.created_at,
            cents=-self.minor if kind == "usage" else self.minor,  # usage is sent negative
            currency=self.unit,
            description=self.description,
            reason=self.status,
        )


class _History(Lenient):
    count: Int64 | None = None
    next: str | None = None
    results: list[_Record]


def parse_balance(account: str, body: bytes, taken_at: datetime) -> BillingSnapshot:
    balance = _Balance.model_validate_json(body)
    return BillingSnapshot(
        account=account,
        taken_at=taken_at,
        balance=Money(balance.minor, balance.unit),
        balance_meaning="SMS credit balance" if balance.unit == CREDITS else "SMS balance",
    )


def parse_history(body: bytes) -> NumberedPage:
    history = _History.model_validate_json(body)
    items = [r.item() for r in history.results if (r.status or "").lower() not in NOT_MONEY]
    # `next` is a full URL; dialwatch asks for the next page number on its own base
    # URL instead of following it, so the key never goes to a host it was not given.
    return NumberedPage(items, history.next is not None, history.count, len(history.results))


def error_text(body: bytes) -> str | None:
    """Django REST framework's {"detail": "..."}."""
    error = json_object(body)
    detail = error.get("detail") if error else None
    return str(detail)[:200] if detail else None


class MifumoProvider(AccountReader):
    """Reads one Mifumo SMS account."""

    provider = "mifumo"

    async def fetch_billing(self, now: datetime) -> BillingSnapshot:
        return await self._client.get(
            BALANCE_PATH, lambda body: parse_balance(self.account, body, now)
        )

    async def read_activity(
        self, floor: datetime, stats: ActivityStats, reach: datetime | None = None
    ) -> AsyncIterator[list[LedgerItem]]:
        yield await read_numbered(self._page, floor, self._client.url(HISTORY_PATH), stats)

    async def _page(self, number: int) -> NumberedPage:
        params = {"page": str(number), "page_size": str(PAGE_SIZE)}
        try:
            return await self._client.get(HISTORY_PATH, parse_history, params)
        except RequestRejected as exc:
            # Django answers 404 "Invalid page." past the end: a list that shrank while
            # it was read. The count check in read_numbered says whether that lost items.
            if exc.status == 404 and number > 1:
                return NumberedPage([], False, None)
            raise


PLUGIN = ProviderPlugin(
    reader=MifumoProvider,
    base_url="https://mifumosms.mifumolabs.com",
    kinds=("balance_below", *SPEND_KINDS),
    balance_unit="credits",
    error_text=error_text,
)
