"""A simulated Dial billing API on 127.0.0.1, speaking the documented contract."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from dialwatch.providers.dial import ACTIVITY_PATH, BILLING_PATH
from dialwatch.simulators import SimulatedApi

FILTERS = {"all": None, "usage": {"usage"}, "payment-credits": {"credit", "payment"}}
_NULL_FIELDS = (
    "amountCents", "totalCents", "fareName", "number", "billedQuantity", "attribution",
    "phoneNumberId", "callId", "messageId", "kind", "invoiceId", "reason",
)  # fmt: skip


class Ledger:
    """Activity items, newest first; ties keep the order they were added in.

    Pages are cut by bisection, so serving a 100,000-item ledger stays cheap.
    """

    def __init__(self) -> None:
        self._items: dict[str, list[dict[str, Any]]] = {name: [] for name in FILTERS}
        self._keys: dict[str, list[float]] = {name: [] for name in FILTERS}

    def add(self, item: dict[str, Any]) -> None:
        """Add one item (its `occurredAt` may be in the past: a late row)."""
        full = _with_nulls(item)
        when = -_timestamp(full["occurredAt"])  # ascending key == newest first
        for name, types in FILTERS.items():
            if types is None or full["type"] in types:
                keys = self._keys[name]
                at = bisect.bisect_right(keys, when)
                keys.insert(at, when)
                self._items[name].insert(at, full)

    def extend(self, items: list[dict[str, Any]]) -> None:
        """Add many items at once: one stable sort instead of one insert each."""
        for name, types in FILTERS.items():
            merged = self._items[name] + [
                _with_nulls(item) for item in items if types is None or item["type"] in types
            ]
            merged.sort(key=lambda item: -_timestamp(item["occurredAt"]))
            self._items[name] = merged
            self._keys[name] = [-_timestamp(item["occurredAt"]) for item in merged]

    def page(self, filter_name: str, limit: int, starting_after: str | None) -> dict[str, Any]:
        keys = self._keys[filter_name]
        start = (
            0 if starting_after is None else bisect.bisect_right(keys, -_timestamp(starting_after))
        )
        data = self._items[filter_name][start : start + limit]
        return {"data": data, "hasMore": start + limit < len(keys)}

    def __len__(self) -> int:
        return len(self._keys["all"])


def _with_nulls(item: dict[str, Any]) -> dict[str, Any]:
    # As in Dial's published example: the other types' fields are present as null.
    return dict.fromkeys(_NULL_FIELDS) | item


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class DialAccount:
    """The simulated account; every field maps to the documented response."""

    api_key: str
    balance_cents: int = 23500
    subscription: dict[str, Any] | None = field(
        default_factory=lambda: {
            "periodStart": "2026-11-01T00:00:00Z",
            "periodEnd": "2026-12-01T00:00:00Z",
            "quantity": 1,
            "interval": "monthly",
            "cancelAtPeriodEnd": False,
        }
    )
    numbers: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": "num_1", "number": "+14155550123", "nickname": "Support line", "mode": "FIXED"},
            {"id": "num_2", "number": "+14155550987", "nickname": "Sales", "mode": "PAYG"},
        ]
    )
    payment_methods: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "id": "pm_1",
                "type": "card",
                "brand": "visa",
                "last4": "4242",
                "expMonth": 4,
                "expYear": 2031,
                "email": None,
                "isDefault": True,
            }
        ]
    )
    numbers_release_at: str | None = None

    def billing(self) -> dict[str, Any]:
        return {
            "balanceCents": self.balance_cents,
            "subscription": self.subscription,
            "numbers": self.numbers,
            "deposits": [],
            "pricing": {"monthlyCents": 1200, "annualCents": 12000},
            "paymentMethods": self.payment_methods,
            "numbersReleaseAt": self.numbers_release_at,
        }


class DialSimulator(SimulatedApi):
    """Serves one DialAccount over HTTP; `requests` counts what it was asked."""

    def __init__(self, account: DialAccount) -> None:
        super().__init__()
        self.account = account
        self.ledger = Ledger()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(BILLING_PATH, self._billing)
        app.router.add_get(ACTIVITY_PATH, self._activity)
        return app

    def unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.account.api_key}":
            return web.json_response({"error": "Invalid or missing API key"}, status=401)
        return None

    async def _billing(self, request: web.Request) -> web.Response:
        return self._refusal(request) or web.json_response(self.account.billing())

    async def _activity(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        query = request.query
        filter_name = query.get("filter", "all")
        if filter_name not in FILTERS:
            return _bad_request("filter", "must be one of all, usage, payment-credits")
        try:
            limit = min(100, max(1, int(query.get("limit", "50"))))
        except ValueError:
            return _bad_request("limit", "Expected number, received nan")
        starting_after = query.get("starting_after")
        if starting_after is not None:
            try:
                _timestamp(starting_after)
            except ValueError:
                return _bad_request("starting_after", "Invalid datetime")
        return web.json_response(self.ledger.page(filter_name, limit, starting_after))


def _bad_request(field_name: str, message: str) -> web.Response:
    # Dial's Error.error is a validation object on 400s.
    body = {"error": {"fieldErrors": {field_name: [message]}, "formErrors": []}}
    return web.json_response(body, status=400)
