"""A simulated Cloudflare API: the user's billing history in the v4 envelope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dialwatch.providers.cloudflare import HISTORY_PATH
from dialwatch.simulators import RateLimit, SimulatedApi, int_param


@dataclass
class CloudflareAccount:
    """The simulated user: an API token, or a global key with its email."""

    api_token: str
    email: str = "billing@example.com"
    global_key: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)

    def charge(
        self, id: str, amount: float, occurred_at: str, *, action: str = "subscription",
        description: str = "", zone: str | None = None, type: str = "charge",
        currency: str = "USD",
    ) -> None:  # fmt: skip
        self.items.append(
            {"id": id, "type": type, "action": action,
             "description": description or f"{action} {id}", "occurred_at": occurred_at,
             "amount": amount, "currency": currency, "zone": {"name": zone}}
        )  # fmt: skip


def envelope_error(status: int, code: int, message: str, **headers: str) -> web.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}],
            "messages": [], "result": None}  # fmt: skip
    return web.json_response(body, status=status, headers=headers)


class CloudflareSimulator(SimulatedApi):
    """Serves one CloudflareAccount, rate limited as published: 1200 requests per five
    minutes per user."""

    def __init__(self, account: CloudflareAccount, rate_limit: RateLimit | None = None) -> None:
        super().__init__()
        self.account = account
        self.rate_limit = rate_limit or RateLimit(1200, 300)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(HISTORY_PATH, self._history)
        return app

    def unauthorized(self, request: web.Request) -> web.Response | None:
        account, headers = self.account, request.headers
        if headers.get("Authorization") == f"Bearer {account.api_token}":
            return None
        if account.global_key and (headers.get("X-Auth-Email"), headers.get("X-Auth-Key")) == (
            account.email,
            account.global_key,
        ):
            return None
        return envelope_error(403, 10000, "Authentication error")

    def rate_limited(self, retry_after: int) -> web.Response:
        return envelope_error(
            429,
            971,
            "Please wait and consider throttling your request speed",
            **{"Retry-After": str(retry_after)},
        )

    async def _history(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        page, per_page = int_param(request, "page", 1), int_param(request, "per_page", 20)
        if page is None or page < 1:
            return envelope_error(400, 1001, "page must be a number of at least 1")
        if per_page is None or not 5 <= per_page <= 50:
            return envelope_error(400, 1001, "per_page must be a number between 5 and 50")
        items = [
            i
            for i in self.account.items
            if all(request.query.get(k) in (None, i[k]) for k in ("type", "action"))
        ]
        items.sort(key=lambda i: str(i["occurred_at"]), reverse=True)  # newest first
        start = (page - 1) * per_page
        result = items[start : start + per_page]
        return web.json_response(
            {
                "success": True,
                "errors": [],
                "messages": [],
                "result": result,
                "result_info": {
                    "page": page,
                    "per_page": per_page,
                    "count": len(result),
                    "total_count": len(items),
                },
            }
        )
