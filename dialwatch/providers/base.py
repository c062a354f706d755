"""What a provider plug-in is: a reader of one account, and what the provider can watch.

Each provider module ends with a `PLUGIN`; the registry in `providers/__init__.py`
lists them, and it is the only place that names providers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from dialwatch.model import ActivityStats, BillingSnapshot, LedgerItem
from dialwatch.providers.http import ApiClient


class Provider(Protocol):
    """One account at one provider, read through its API."""

    account: str
    provider: str

    async def fetch_billing(self, now: datetime) -> BillingSnapshot: ...

    def read_activity(
        self, floor: datetime, stats: ActivityStats, reach: datetime | None = None
    ) -> AsyncIterator[list[LedgerItem]]:
        """Every item at or after `floor`, newest first, in batches. With `reach`, no
        page is asked for once one reaches below it: the items of the pages read are
        still returned down to `floor` (a ledger read by page number reads it whole)."""
        ...


Headers = Callable[[str, str | None], dict[str, str]]  # (api_key, api_email) -> headers
ErrorText = Callable[[bytes], str | None]

# Rule kinds fed by a ledger of money items (any provider with a billing history).
SPEND_KINDS = ("spend_above", "usage_item", "ledger_event", "spend_anomaly")


def bearer(api_key: str, api_email: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@dataclass(frozen=True)
class ProviderPlugin:
    """One provider: how to read it, and what dialwatch can watch there."""

    reader: Callable[[str, ApiClient], Provider]  # (account name, client) -> reader
    base_url: str  # the documented one
    kinds: tuple[str, ...]  # the rule kinds it supports
    balance_unit: Literal["money", "credits"] | None = None
    headers: Headers = bearer
    # Reads the provider's own error message out of an error body; None: the generic
    # reader, which knows an `error` as a string or a validation object.
    error_text: ErrorText | None = None
    # What an account's `api_email` goes with, where the provider takes one.
    email_auth: str | None = None
    # What a ledger item did to the balance (cents, + in, - out), where the ledger says
    # it exactly: a backtest walks the balance back from today's through the items.
    # None: the history cannot give the balance (it is kept in other units, or not all
    # of its movements are listed).
    wallet_effect: Callable[[LedgerItem], int] | None = None

    @property
    def has_money(self) -> bool:
        """Whether it has a balance or spend to summarise (digests, status page)."""
        return self.balance_unit is not None or "spend_above" in self.kinds
