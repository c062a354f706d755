"""Dial's billing API (GET /api/v1/billing) translated into a BillingSnapshot."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
)

from dialwatch.api_client import ApiClient
from dialwatch.errors import BadResponse
from dialwatch.model import BillingSnapshot, LedgerItem, PaymentMethod, PhoneNumber, Subscription
from dialwatch.units import Money

log = structlog.get_logger("dialwatch.dial")

BILLING_PATH = "/api/v1/billing"
ACTIVITY_PATH = "/api/v1/billing/activity"
PAGE_LIMIT = 100  # the API clamps `limit` to 1-100
# The documented fields; an item's identity is a digest of these, so a field the API
# adds later does not make old items look new.
ITEM_FIELDS = (
    "type", "occurredAt", "amountCents", "totalCents", "fareName", "number", "billedQuantity",
    "attribution", "phoneNumberId", "callId", "messageId", "kind", "invoiceId", "reason",
)  # fmt: skip


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


class _ActivityItem(_Lenient):
    # Each type carries only its own fields; the rest may be absent or null.
    type: str
    occurredAt: AwareDatetime
    amountCents: StrictInt | None = None
    totalCents: StrictInt | None = None
    fareName: str | None = None
    number: str | None = None
    attribution: str | None = None
    kind: str | None = None
    invoiceId: str | None = None
    reason: str | None = None


class _ActivityPage(_Lenient):
    data: list[_ActivityItem]
    hasMore: StrictBool


_RAW_PAGE = TypeAdapter(dict[str, Any])


@dataclass(frozen=True)
class _Row:
    """An item as read, before it gets its identity."""

    raw_at: str  # occurredAt exactly as sent: the only cursor the API accepts
    digest: str
    item: _ActivityItem


@dataclass(frozen=True)
class _Page:
    rows: list[_Row]
    has_more: bool


@dataclass
class ActivityStats:
    """What one read of the ledger cost, and what it could not read."""

    requests: int = 0
    # Instants where one filter's page was all one instant: the API's timestamp cursor
    # cannot page inside a single instant, so items there may be out of reach.
    truncated: list[str] = field(default_factory=list)


def parse_activity_page(body: Any, url: str) -> _Page:
    """Validate one GET /api/v1/billing/activity page; off the documented shape is BadResponse."""
    try:
        page = _ActivityPage.model_validate(body)
        raw_items = _RAW_PAGE.validate_python(body)["data"]
    except ValidationError as exc:
        raise BadResponse(
            f"unexpected activity response: {describe_validation(exc)}", url=url
        ) from exc
    rows = []
    for index, (item, raw) in enumerate(zip(page.data, raw_items, strict=True)):
        if item.type == "usage" and item.totalCents is None and item.amountCents is None:
            raise BadResponse(
                f"unexpected activity response: data.{index}: a usage item needs totalCents",
                url=url,
            )
        content = json.dumps([raw.get(name) for name in ITEM_FIELDS], separators=(",", ":"))
        digest = hashlib.blake2b(content.encode(), digest_size=12).hexdigest()
        rows.append(_Row(str(raw["occurredAt"]), digest, item))
    return _Page(rows, page.hasMore)


def _keyed(rows: list[_Row]) -> list[LedgerItem]:
    """Ledger items with identities. Identical items at one instant are told apart by
    rank, which is stable because a batch always holds whole tie groups."""
    ranks: Counter[tuple[str, str]] = Counter()
    items = []
    for row in rows:
        rank = ranks[(row.raw_at, row.digest)]
        ranks[(row.raw_at, row.digest)] += 1
        item = row.item
        cents = item.totalCents if item.type == "usage" else item.amountCents
        if cents is None and item.type == "usage":
            cents = item.amountCents
        items.append(
            LedgerItem(
                key=f"{row.digest}#{rank}",
                type=item.type,
                occurred_at=item.occurredAt,
                amount=Money(cents or 0, "USD"),
                fare=item.fareName,
                number=item.number,
                attribution=item.attribution,
                kind=item.kind,
                invoice_id=item.invoiceId,
                reason=item.reason,
            )
        )
    return items


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

    async def read_activity(
        self, floor: datetime, stats: ActivityStats
    ) -> AsyncIterator[list[LedgerItem]]:
        """Every item at or after `floor`, newest first, in batches of whole tie groups.

        `starting_after` is an exclusive timestamp, so passing the last item's
        `occurredAt` would drop the rest of its tie group. Instead, the group a page
        ends in is left for the next page, which starts strictly below the page's
        previous instant and so holds that group whole.
        """
        starting_after: str | None = None
        while True:
            page = await self._page("all", starting_after, stats)
            rows = page.rows
            if not rows:
                return
            last = rows[-1]
            if not page.has_more or last.item.occurredAt < floor:
                yield _keyed([r for r in rows if r.item.occurredAt >= floor])
                return
            newer = [r for r in rows if r.item.occurredAt != last.item.occurredAt]
            if newer:
                yield _keyed(newer)
                starting_after = newer[-1].raw_at
                continue
            # One instant fills the whole page: read it per filter, each up to a page.
            group: list[_Row] = []
            for name in ("usage", "payment-credits"):
                split = await self._page(name, starting_after, stats)
                at_instant = [r for r in split.rows if r.item.occurredAt == last.item.occurredAt]
                if split.has_more and len(at_instant) == len(split.rows):
                    stats.truncated.append(last.raw_at)
                    log.error(
                        "ledger.tie_group_truncated",
                        account=self.account,
                        occurred_at=last.raw_at,
                        filter=name,
                        read=len(at_instant),
                        why="more items share this instant than the API returns in one page",
                    )
                group += at_instant
            yield _keyed(group)
            starting_after = last.raw_at

    async def _page(
        self, filter_name: str, starting_after: str | None, stats: ActivityStats
    ) -> _Page:
        params = {"limit": str(PAGE_LIMIT), "filter": filter_name}
        if starting_after is not None:
            params["starting_after"] = starting_after
        stats.requests += 1
        return await self._client.get(ACTIVITY_PATH, parse_activity_page, params)
