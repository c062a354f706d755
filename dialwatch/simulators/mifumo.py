"""A simulated Mifumo SMS API: the SMS credit balance and the billing history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dialwatch.providers.mifumo import BALANCE_PATH, HISTORY_PATH
from dialwatch.simulators import SimulatedApi, int_param

TYPES = ("purchase", "payment", "usage")


@dataclass
class MifumoAccount:
    """The simulated account: records as the API sends them (`amount` a float)."""

    api_key: str
    balance: int = 1000
    currency: str = "credits"
    records: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self, id: str, type: str, amount: float, created_at: str, description: str = ""
    ) -> None:
        self.records.append(
            {"id": id, "type": type, "description": description or f"{type} {id}",
             "amount": amount, "currency": "USD", "status": "completed",
             "created_at": created_at}
        )  # fmt: skip


class MifumoSimulator(SimulatedApi):
    """Serves one MifumoAccount. `newest_first` orders the history; the documented
    example lists it oldest first, which is the default."""

    def __init__(self, account: MifumoAccount, *, newest_first: bool = False) -> None:
        super().__init__()
        self.account = account
        self.newest_first = newest_first

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(BALANCE_PATH, self._balance)
        app.router.add_get(HISTORY_PATH, self._history)
        return app

    def unauthorized(self, request: web.Request) -> web.Response | None:
        key = self.account.api_key
        if request.headers.get("Authorization") == f"Bearer {key}":
            return None
        if request.headers.get("X-API-Key") == key:
            return None
        return web.json_response({"detail": "Invalid API key."}, status=401)

    def rate_limited(self, retry_after: int) -> web.Response:
        return web.json_response(
            {"detail": f"Request was throttled. Expected available in {retry_after} seconds."},
            status=429,
            headers={"Retry-After": str(retry_after)},
        )

    async def _balance(self, request: web.Request) -> web.Response:
        body = {"balance": self.account.balance, "currency": self.account.currency}
        return self._refusal(request) or web.json_response(body)

    async def _history(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        page, size = int_param(request, "page", 1), int_param(request, "page_size", 20)
        if page is None or size is None or page < 1 or size < 1:
            return web.json_response({"detail": "Invalid page."}, status=404)
        size = min(size, 100)  # page_size is capped at its max, as Django REST does
        kind = request.query.get("type")
        records = [r for r in self.account.records if kind is None or r["type"] == kind]
        records.sort(key=lambda r: str(r["created_at"]), reverse=self.newest_first)
        start = (page - 1) * size
        if start >= len(records) and page > 1:
            return web.json_response({"detail": "Invalid page."}, status=404)

        def link(number: int) -> str:
            return str(request.url.with_query({**request.query, "page": str(number)}))

        return web.json_response(
            {
                "count": len(records),
                "next": link(page + 1) if start + size < len(records) else None,
                "previous": link(page - 1) if page > 1 else None,
                "results": records[start : start + size],
            }
        )
