"""Cloudflare: the user's billing history (charges), in dialwatch's model.

GET /user/billing/history (deprecated by Cloudflare, still served) pages by `page` and
`per_page` (5-50), newest first by `occurred_at`, inside the v4 envelope `success`,
`errors`, `messages`, `result`, `result_info`. Amounts are floats in currency units,
converted exactly. Auth is an API token (Bearer), or a global key with its email.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from pydantic import AwareDatetime, Field, StrictBool, model_validator

from dialwatch.model import ActivityStats, BillingSnapshot, LedgerItem, time_key
from dialwatch.providers.base import SPEND_KINDS, ProviderPlugin
from dialwatch.providers.http import AccountReader, Lenient, Priced, json_object
from dialwatch.providers.pages import NumberedPage, read_numbered

HISTORY_PATH = "/user/billing/history"
PER_PAGE = 50  # the documented maximum


class _Message(Lenient):
    code: int | None = None
    message: str = ""


class _Zone(Lenient):
    name: str | None = None


class _Item(Priced):
    id: str
    type: str
    action: str | None = None
    description: str | None = None
    occurred_at: AwareDatetime
    zone: _Zone | None = None

    def item(self) -> LedgerItem:
        return LedgerItem(
            key=f"{time_key(self.occurred_at)}-{self.id}",
            type=self.type.lower(),
            occurred_at=self.occurred_at,
            cents=self.minor,
            currency=self.unit,
            action=self.action,
            description=self.description,
            zone=self.zone.name if self.zone else None,
        )


class _Info(Lenient):
    page: int | None = None
    per_page: int | None = None
    total_count: int | None = None


class _Envelope(Lenient):
    success: StrictBool
    errors: list[_Message] = Field(default_factory=list)
    result: list[_Item] | None
    result_info: _Info | None = None

    @model_validator(mode="after")
    def _succeeded(self) -> _Envelope:
        if not self.success:
            raise ValueError(f"success is false: {_describe(self.errors) or 'no errors listed'}")
        return self


def _describe(errors: list[_Message]) -> str:
    return "; ".join(f"{e.code}: {e.message}" if e.code else e.message for e in errors)


def parse_history(body: bytes, page: int) -> NumberedPage:
    envelope = _Envelope.model_validate_json(body)
    items = [item.item() for item in envelope.result or []]
    info = envelope.result_info or _Info()
    total = info.total_count
    more = len(items) >= PER_PAGE and (total is None or page * PER_PAGE < total)
    return NumberedPage(items, more, total)


def error_text(body: bytes) -> str | None:
    """The envelope's errors: `code: message; ...`."""
    envelope = json_object(body)
    errors = envelope.get("errors") if envelope else None
    if not isinstance(errors, list) or not errors:
        return None
    return "; ".join(
        f"{e.get('code')}: {e.get('message')}" if isinstance(e, dict) else str(e) for e in errors
    )[:300]


def headers(api_key: str, api_email: str | None) -> dict[str, str]:
    if api_email:
        return {"X-Auth-Email": api_email, "X-Auth-Key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


class CloudflareProvider(AccountReader):
    """Reads one Cloudflare user's billing history."""

    provider = "cloudflare"

    async def fetch_billing(self, now: datetime) -> BillingSnapshot:
        """Cloudflare has no balance here, so no request: the history is all there is."""
        return BillingSnapshot(self.account, now, None)

    async def read_activity(
        self, floor: datetime, stats: ActivityStats, reach: datetime | None = None
    ) -> AsyncIterator[list[LedgerItem]]:
        yield await read_numbered(self._page, floor, self._client.url(HISTORY_PATH), stats)

    async def _page(self, number: int) -> NumberedPage:
        params = {"page": str(number), "per_page": str(PER_PAGE)}
        return await self._client.get(
            HISTORY_PATH, lambda body: parse_history(body, number), params
        )


PLUGIN = ProviderPlugin(
    reader=CloudflareProvider,
    base_url="https://api.cloudflare.com/client/v4",
    kinds=SPEND_KINDS,
    headers=headers,
    error_text=error_text,
    email_auth="a Cloudflare global API key",
)
