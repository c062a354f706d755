"""A simulated Dial billing API on 127.0.0.1, speaking the documented contract.

Used by `dialwatch demo` and by the tests: the account is plain data you change
between checks, and `faults` queues failures (5xx, 429, HTML, truncated JSON) that
are served, one per request, before the next normal answer.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dialwatch.dial import BILLING_PATH


@dataclass
class Fault:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def server_error(cls, status: int = 503) -> Fault:
        return cls(status, json.dumps({"error": "Service temporarily unavailable"}).encode())

    @classmethod
    def rate_limited(cls, retry_after: str = "1") -> Fault:
        return cls(429, b'{"error": "Too many requests"}', headers={"Retry-After": retry_after})

    @classmethod
    def html(cls, status: int = 200) -> Fault:
        page = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
        return cls(status, page, content_type="text/html")

    @classmethod
    def truncated(cls) -> Fault:
        return cls(200, b'{"balanceCents": 12000, "subscription": {"periodEnd": "2024-')

    @classmethod
    def json_body(cls, body: Any, status: int = 200) -> Fault:
        return cls(status, json.dumps(body).encode())


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


class DialSimulator:
    """Serves one DialAccount over HTTP; `requests` counts what it was asked."""

    def __init__(self, account: DialAccount) -> None:
        self.account = account
        self.faults: deque[Fault] = deque()
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(BILLING_PATH, self._billing)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _billing(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        if request.headers.get("Authorization") != f"Bearer {self.account.api_key}":
            return web.json_response({"error": "Invalid or missing API key"}, status=401)
        if self.faults:
            fault = self.faults.popleft()
            return web.Response(
                status=fault.status,
                body=fault.body,
                content_type=fault.content_type,
                headers=fault.headers,
            )
        return web.json_response(self.account.billing())
