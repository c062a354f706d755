"""A simulated HookBridge API: monthly usage history with its error envelope."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dialwatch.providers.hookbridge import USAGE_PATH
from dialwatch.simulators import RateLimit, SimulatedApi, int_param

_REQUEST_IDS = itertools.count(1)


@dataclass
class HookBridgeAccount:
    """The simulated project: `periods` newest first, as the API lists them."""

    api_key: str
    periods: list[dict[str, Any]] = field(default_factory=list)

    def month(
        self, start: str, end: str, messages: int, limit: int | None, overage: int = 0
    ) -> dict[str, Any]:
        """Add (or replace) a month; returns it, to change between checks."""
        self.periods = [p for p in self.periods if p["period_start"] != start]
        period = {"period_start": start, "period_end": end, "message_count": messages,
                  "overage_count": overage, "plan_limit": limit}  # fmt: skip
        self.periods.append(period)
        self.periods.sort(key=lambda p: str(p["period_start"]), reverse=True)
        return period


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = {"error": {"code": code, "message": message},
            "meta": {"request_id": f"req_{next(_REQUEST_IDS):06d}"}}  # fmt: skip
    return web.json_response(body, status=status, headers=headers)


class HookBridgeSimulator(SimulatedApi):
    """Serves one HookBridgeAccount, rate limited as published: 1000 requests a minute."""

    def __init__(self, account: HookBridgeAccount, rate_limit: RateLimit | None = None) -> None:
        super().__init__()
        self.account = account
        self.rate_limit = rate_limit or RateLimit(1000, 60)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(USAGE_PATH, self._usage)
        return app

    def unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.account.api_key}":
            return None
        return error(401, "UNAUTHORIZED", "Invalid or missing API key")

    def rate_limited(self, retry_after: int) -> web.Response:
        return error(429, "RATE_LIMITED", "Too many requests", **{"Retry-After": str(retry_after)})

    async def _usage(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        limit, offset = int_param(request, "limit", 12), int_param(request, "offset", 0)
        if limit is None or not 1 <= limit <= 24:
            return error(400, "INVALID_REQUEST", "limit must be between 1 and 24")
        if offset is None or offset < 0:
            return error(400, "INVALID_REQUEST", "offset must be 0 or more")
        periods = self.account.periods
        return web.json_response(
            {
                "data": periods[offset : offset + limit],
                "meta": {
                    "request_id": f"req_{next(_REQUEST_IDS):06d}",
                    "total": len(periods),
                    "limit": limit,
                    "offset": offset,
                    "has_more": offset + limit < len(periods),
                },
            }
        )
