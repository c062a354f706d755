"""Dial's billing API (GET /api/v1/billing) translated into a BillingSnapshot."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import structlog
from pydantic import (
    AwareDatetime,
    StrictBool,
    ValidationError,
)

from dialwatch.errors import BadResponse
from dialwatch.model import (
    ActivityStats,
    BillingSnapshot,
    LedgerItem,
    PaymentMethod,
    PhoneNumber,
    Subscription,
    time_key,
)
from dialwatch.providers.base import SPEND_KINDS, ProviderPlugin
from dialwatch.providers.http import AccountReader, Int64, Lenient
from dialwatch.units import Money

log = structlog.get_logger("dialwatch.dial")

BILLING_PATH = "/api/v1/billing"
ACTIVITY_PATH = "/api/v1/billing/activity"
PAGE_LIMIT = 100  # the API clamps `limit` to 1-100


class _Subscription(Lenient):
    periodEnd: AwareDatetime
    cancelAtPeriodEnd: StrictBool
    quantity: int | None = None
    interval: str | None = None


class _Number(Lenient):
    number: str
    nickname: str | None = None
    mode: str


class _PaymentMethod(Lenient):
    id: str = ""
    type: str = ""
    brand: str | None = ""
    last4: str | None = ""
    expMonth: int | None = 0
    expYear: int | None = 0
    isDefault: bool = False


class _Billing(Lenient):
    # Required: a check that cannot see these must fail, never read as zero or "none".
    balanceCents: Int64
    subscription: _Subscription | None
    numbers: list[_Number]
    paymentMethods: list[_PaymentMethod]
    numbersReleaseAt: AwareDatetime | None = None


def parse_billing(account: str, body: bytes, taken_at: datetime) -> BillingSnapshot:
    """A GET /api/v1/billing body as a snapshot; raises ValidationError off the contract."""
    billing = _Billing.model_validate_json(body)
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


class _ActivityItem(Lenient):
    # Each type carries only its own fields; the rest may be absent or null.
    type: str
    occurredAt: str  # kept as sent: it is the cursor; parsed below
    amountCents: Int64 | None = None
    totalCents: Int64 | None = None
    fareName: str | None = None
    number: str | None = None
    billedQuantity: int | None = None
    attribution: str | None = None
    phoneNumberId: str | None = None
    callId: str | None = None
    messageId: str | None = None
    kind: str | None = None
    invoiceId: str | None = None
    reason: str | None = None


class _ActivityPage(Lenient):
    data: list[_ActivityItem]
    hasMore: StrictBool


class _Row(NamedTuple):
    """An item as read, before it gets its identity."""

    at: datetime
    item: _ActivityItem


@dataclass(frozen=True)
class _Page:
    rows: list[_Row]
    has_more: bool


def parse_activity_page(body: bytes) -> _Page:
    """One GET /api/v1/billing/activity page; raises ValidationError off the contract."""
    page = _ActivityPage.model_validate_json(body)
    rows = []
    for index, item in enumerate(page.data):
        try:
            at = datetime.fromisoformat(item.occurredAt)
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            raise _contract_error(index, "occurredAt", "an ISO date-time with a timezone")
        if item.type == "usage" and item.totalCents is None and item.amountCents is None:
            raise _contract_error(index, "totalCents", "an integer on a usage item")
        rows.append(_Row(at, item))
    return _Page(rows, page.hasMore)


def _contract_error(index: int, name: str, expected: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "activity",
        [{"type": "value_error", "loc": ("data", index, name),
          "ctx": {"error": f"expected {expected}"}, "input": None}],
    )  # fmt: skip


def _keyed(rows: list[_Row]) -> list[LedgerItem]:
    """Ledger items with identities. Identical items at one instant are told apart by
    rank, which is stable because a batch always holds whole tie groups."""
    ranks: dict[str, int] = {}
    items: list[LedgerItem] = []
    append = items.append
    for at, item in rows:
        # Time first: keys of one page sort together, so storing a page touches a few
        # B-tree pages, not one per item. Computed only for the items kept (a page's
        # items below the floor never need it).
        base = f"{time_key(at)}-{content_digest(item)}"
        rank = ranks.get(base, 0)
        ranks[base] = rank + 1
        cents = item.amountCents
        if item.type == "usage" and item.totalCents is not None:
            cents = item.totalCents
        append(
            LedgerItem(
                f"{base}#{rank}",
                item.type,
                at,
                cents or 0,
                "USD",
                item.fareName,
                item.number,
                item.attribution,
                item.kind,
                item.invoiceId,
                item.reason,
            )
        )
    return items


def content_digest(item: _ActivityItem) -> str:
    """An item's identity besides its time: a digest of its documented fields only (the
    model's; extras are ignored), so a field the API adds later does not make old items
    look new. repr of str/int/None is canonical and far cheaper than json.dumps."""
    content = repr(tuple(item.__dict__.values()))
    return hashlib.blake2b(content.encode(), digest_size=12).hexdigest()


class DialProvider(AccountReader):
    """Reads one Dial account."""

    provider = "dial"

    async def fetch_billing(self, now: datetime) -> BillingSnapshot:
        return await self._client.get(
            BILLING_PATH, lambda body: parse_billing(self.account, body, now)
        )

    async def read_activity(
        self, floor: datetime, stats: ActivityStats, reach: datetime | None = None
    ) -> AsyncIterator[list[LedgerItem]]:
        """Every item at or after `floor`, newest first, in batches of whole tie groups;
        with `reach`, the pages down to it only (and on them, the items down to `floor`).

        `starting_after` is an exclusive timestamp, so passing the last item's
        `occurredAt` would drop the rest of its tie group. Instead, the group a page
        ends in is left for the next page, which starts strictly below the page's
        previous instant and so holds that group whole.
        """
        starting_after: str | None = None
        prefetched: asyncio.Task[_Page] | None = None
        stop = floor if reach is None else max(floor, reach)
        while True:
            page = await (prefetched or self._page("all", starting_after, stats))
            prefetched = None
            rows = page.rows
            if not rows and page.has_more:
                raise BadResponse(
                    "pagination ended early: an empty page says more follow",
                    url=self._client.url(ACTIVITY_PATH),
                )
            if not rows:
                return
            last = rows[-1]
            if not page.has_more or last.at < stop:
                yield _keyed([r for r in rows if r.at >= floor])
                return
            newer = [r for r in rows if r.at != last.at]
            if newer:
                starting_after = newer[-1].item.occurredAt
                # Ask for the next page now, so the server works while this one is stored.
                prefetched = asyncio.create_task(self._page("all", starting_after, stats))
                await asyncio.sleep(0)  # let the request go out before the caller's work
                try:
                    yield _keyed(newer)
                except BaseException:
                    prefetched.cancel()
                    raise
                continue
            # One instant fills the whole page: read it per filter, each up to a page.
            group: list[_Row] = []
            for name in ("usage", "payment-credits"):
                split = await self._page(name, starting_after, stats)
                at_instant = [r for r in split.rows if r.at == last.at]
                if split.has_more and len(at_instant) == len(split.rows):
                    stats.truncated.append(last.item.occurredAt)
                    log.error(
                        "ledger.tie_group_truncated",
                        account=self.account,
                        occurred_at=last.item.occurredAt,
                        filter=name,
                        read=len(at_instant),
                        why="more items share this instant than the API returns in one page",
                    )
                group += at_instant
            yield _keyed(group)
            starting_after = last.item.occurredAt

    async def _page(
        self, filter_name: str, starting_after: str | None, stats: ActivityStats
    ) -> _Page:
        params = {"limit": str(PAGE_LIMIT), "filter": filter_name}
        if starting_after is not None:
            params["starting_after"] = starting_after
        stats.requests += 1
        return await self._client.get(ACTIVITY_PATH, parse_activity_page, params)


def wallet_effect(item: LedgerItem) -> int:
    """A credit adds to the wallet; usage billed to the wallet spends `totalCents`;
    usage covered by the plan (entitlement) and subscription payments leave it alone."""
    if item.type == "credit":
        return item.cents
    if item.type == "usage" and item.attribution == "wallet":
        return -item.cents
    return 0


PLUGIN = ProviderPlugin(
    reader=DialProvider,
    base_url="https://getdial.ai",
    kinds=(
        "balance_below",
        "subscription_cancelling",
        "numbers_at_risk",
        "payment_method_expiring",
        *SPEND_KINDS,
        "runway_below",
    ),
    balance_unit="money",
    wallet_effect=wallet_effect,
)
