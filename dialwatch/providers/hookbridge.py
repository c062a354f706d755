"""HookBridge: this month's message quota, in dialwatch's model.

GET /v1/billing/usage-history lists calendar-month (UTC) periods with `message_count`,
`overage_count` and `plan_limit` (null: unlimited), paged by `limit` (1-24) and
`offset` with `meta.has_more`. Errors come as {"error": {"code", "message"}, "meta":
{"request_id"}}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime

from pydantic import StrictBool

from dialwatch.errors import BadResponse
from dialwatch.model import ActivityStats, BillingSnapshot, LedgerItem, QuotaPeriod
from dialwatch.providers.base import ProviderPlugin
from dialwatch.providers.http import AccountReader, Int64, Lenient, json_object

USAGE_PATH = "/v1/billing/usage-history"
PAGE_LIMIT = 12  # the default; the API allows 1-24
MAX_PAGES = 10  # the current month is on the first page; this bounds a wrong API


class _Period(Lenient):
    period_start: date
    period_end: date
    message_count: Int64
    overage_count: Int64 = 0
    plan_limit: Int64 | None

    def quota(self) -> QuotaPeriod:
        return QuotaPeriod(
            self.period_start,
            self.period_end,
            self.message_count,
            self.plan_limit,
            self.overage_count,
        )


class _Meta(Lenient):
    has_more: StrictBool = False


class _Page(Lenient):
    data: list[_Period]
    meta: _Meta = _Meta()


def error_text(body: bytes) -> str | None:
    """`CODE: message (request req_...)`, the request id being what support asks for."""
    envelope = json_object(body)
    error = envelope.get("error") if envelope else None
    if not isinstance(error, dict):
        return None
    meta = envelope.get("meta") if envelope else None
    request = meta.get("request_id") if isinstance(meta, dict) else None
    text = f"{error.get('code', 'ERROR')}: {error.get('message', '')}"
    return f"{text} (request {request})" if request else text


class HookBridgeProvider(AccountReader):
    """Reads one HookBridge project's usage."""

    provider = "hookbridge"

    async def fetch_billing(self, now: datetime) -> BillingSnapshot:
        """The period holding today (UTC); quota None if the API lists none yet."""
        today = now.date()
        for page in range(MAX_PAGES):
            params = {"limit": str(PAGE_LIMIT), "offset": str(page * PAGE_LIMIT)}
            result = await self._client.get(USAGE_PATH, _Page.model_validate_json, params)
            current = [p for p in result.data if p.period_start <= today <= p.period_end]
            if current:
                return BillingSnapshot(self.account, now, None, quota=current[0].quota())
            if result.meta.has_more and not result.data:
                raise BadResponse(
                    "pagination ended early: an empty page says more follow",
                    url=self._client.url(USAGE_PATH),
                )
            # Newest first: once a page reaches past months, this one is not listed.
            if not result.meta.has_more or any(p.period_end < today for p in result.data):
                break
        return BillingSnapshot(self.account, now, None)

    async def read_activity(
        self, floor: datetime, stats: ActivityStats, reach: datetime | None = None
    ) -> AsyncIterator[list[LedgerItem]]:
        """HookBridge has no ledger: no spend rule runs on it (see PLUGIN)."""
        return
        yield []


PLUGIN = ProviderPlugin(
    reader=HookBridgeProvider,
    base_url="https://api.hookbridge.io",
    kinds=("quota_above",),
    error_text=error_text,
)
