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


Headers = Callable[[str, str | None], dict[str, str]]  # (api_key, api_email) -> headers
ErrorText = Callable[[bytes], str | None]


def bearer(api_key: str, api_email: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


# Each provider: its class, its auth headers, and its error-body reader (None: the
# generic one, which knows Dial's `error` as a string or a validation object).
_PROVIDERS: dict[str, tuple[Callable[[str, ApiClient], Provider], Headers, ErrorText | None]] = {
    "dial": (dial.DialProvider, bearer, None),
    "mifumo": (mifumo.MifumoProvider, bearer, mifumo.error_text),
    "hookbridge": (hookbridge.HookBridgeProvider, bearer, hookbridge.error_text),
    "cloudflare": (cloudflare.CloudflareProvider, cloudflare.headers, cloudflare.error_text),
}


def open_provider(
    account: Account,
    session: aiohttp.ClientSession,
    *,
    sleep: Sleep,
    observe: Callable[[str, float], None] | None = None,
) -> Provider:
    """The provider reading `account`, over `session`."""
    make, headers, error_text = _PROVIDERS[account.provider]
    auth = headers(account.api_key.get_secret_value(), account.api_email)
    client = ApiClient(
        session,
        account.url,
        {**auth, "Accept": "application/json"},
        sleep=sleep,
        observe=observe,
        error_text=error_text,
    )
    return make(account.name, client)
