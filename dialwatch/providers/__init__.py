"""The billing APIs dialwatch reads: one module per provider, and this registry.

Each provider module only translates its API into dialwatch's model (`model.py`):
its paths, pagination, auth headers and error bodies, and ends with a `PLUGIN` saying
what it can watch. Adding a provider is a module beside these and one line in
`REGISTRY`; nothing else in dialwatch names providers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import aiohttp
from pydantic import SecretStr

from dialwatch.providers import cloudflare, dial, hookbridge, mifumo
from dialwatch.providers.base import Provider, ProviderPlugin
from dialwatch.providers.http import UNLIMITED, ApiClient, RequestLimit, Sleep

__all__ = ["DEFAULT_PROVIDER", "REGISTRY", "Provider", "ProviderPlugin", "open_provider"]

REGISTRY: dict[str, ProviderPlugin] = {
    "dial": dial.PLUGIN,
    "mifumo": mifumo.PLUGIN,
    "hookbridge": hookbridge.PLUGIN,
    "cloudflare": cloudflare.PLUGIN,
}
# Without an `accounts` section, the one account read with DIALWATCH_API_KEY is here.
DEFAULT_PROVIDER = "dial"


class AccountConfig(Protocol):
    """What opening a provider needs to know of an account (the rules file's Account)."""

    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def api_key(self) -> SecretStr: ...
    @property
    def api_email(self) -> str | None: ...
    @property
    def url(self) -> str: ...


def open_provider(
    account: AccountConfig,
    session: aiohttp.ClientSession,
    *,
    sleep: Sleep,
    observe: Callable[[str, float], None] | None = None,
    limit: RequestLimit = UNLIMITED,
) -> Provider:
    """The provider reading `account`, over `session`, within its provider's `limit`."""
    plugin = REGISTRY[account.provider]
    auth = plugin.headers(account.api_key.get_secret_value(), account.api_email)
    client = ApiClient(
        session,
        account.url,
        {**auth, "Accept": "application/json"},
        sleep=sleep,
        observe=observe,
        error_text=plugin.error_text,
        limit=limit,
    )
    return plugin.reader(account.name, client)
