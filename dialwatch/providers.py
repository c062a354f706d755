"""Which module reads which provider, and building one for an account.

Each provider module only translates its API into dialwatch's model (`model.py`):
its paths, pagination, auth headers and error bodies. What each can watch is in
`config.PROVIDERS`, where the rules file is checked against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Protocol

import aiohttp

from dialwatch import cloudflare, dial, hookbridge, mifumo
from dialwatch.api_client import ApiClient, Sleep
from dialwatch.config import Account
from dialwatch.model import ActivityStats, BillingSnapshot, LedgerItem


class Provider(Protocol):
    """One account at one provider, read through its API."""

    account: str
    provider: str

    async def fetch_billing(self, now: datetime) -> BillingSnapshot: ...

    def read_activity(
        self, floor: datetime, stats: ActivityStats
    ) -> AsyncIterator[list[LedgerItem]]: ...


class _Module(Protocol):
    def headers(self, api_key: str, api_email: str | None) -> dict[str, str]: ...

    def error_text(self, body: bytes) -> str | None: ...


_MODULES: dict[str, tuple[_Module, Callable[[str, ApiClient], Provider]]] = {
    "dial": (dial, dial.DialProvider),
    "mifumo": (mifumo, mifumo.MifumoProvider),
    "hookbridge": (hookbridge, hookbridge.HookBridgeProvider),
    "cloudflare": (cloudflare, cloudflare.CloudflareProvider),
}


def open_provider(
    account: Account,
    session: aiohttp.ClientSession,
    *,
    sleep: Sleep,
    observe: Callable[[str, float], None] | None = None,
) -> Provider:
    """The provider reading `account`, over `session`."""
    module, make = _MODULES[account.provider]
    headers = module.headers(account.api_key.get_secret_value(), account.api_email)
    client = ApiClient(
        session,
        account.url,
        {**headers, "Accept": "application/json"},
        sleep=sleep,
        observe=observe,
        error_text=module.error_text,
    )
    return make(account.name, client)
