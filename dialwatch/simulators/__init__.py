"""Simulated billing APIs on 127.0.0.1, each speaking its provider's documented contract.

Used by `dialwatch demo` and by the tests: each account is plain data you change between
checks, and `faults` queues failures (5xx, 429, HTML, truncated JSON) that are served,
one per request, before the next normal answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


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
class RateLimit:
    """A provider's published limit: `requests` per `seconds`, in a sliding window."""

    requests: int
    seconds: float
    _times: deque[float] = field(default_factory=deque)

    def retry_after(self) -> int | None:
        """Seconds until a request is allowed again; None (and counted) if it is now."""
        now = time.monotonic()
        while self._times and self._times[0] <= now - self.seconds:
            self._times.popleft()
        if len(self._times) >= self.requests:
            return max(1, int(self._times[0] + self.seconds - now + 0.999))
        self._times.append(now)
        return None


class SimulatedApi:
    """What every simulator shares: a server on 127.0.0.1, queued faults, a request log,
    the provider's auth check (`unauthorized`) and rate limit (`rate_limited`)."""

    rate_limit: RateLimit | None = None

    def __init__(self) -> None:
        self.faults: deque[Fault] = deque()
        # Faults for the Nth request (1-based) from now on, e.g. to fail mid-backlog.
        self.faults_at: dict[int, Fault] = {}
        self.requests: list[str] = []
        # While set and not yet released, every request waits: a provider that hangs.
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()  # set once a request waits on `hold`
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def app(self) -> web.Application:
        raise NotImplementedError

    def unauthorized(self, request: web.Request) -> web.Response | None:
        """The provider's answer to missing or wrong credentials, or None if they are right."""
        raise NotImplementedError

    def rate_limited(self, retry_after: int) -> web.Response:
        """The provider's 429."""
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = self.app()
        app.middlewares.append(self._held)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()  # let held requests finish, or shutting down waits for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _held(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        return await handler(request)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The 401, 429 or queued fault this request gets instead of an answer, if any."""
        self.requests.append(request.path_qs)
        refused = self.unauthorized(request)
        if refused is not None:
            return refused
        if self.rate_limit is not None:
            wait = self.rate_limit.retry_after()
            if wait is not None:
                return self.rate_limited(wait)
        scheduled = self.faults_at.pop(len(self.requests), None)
        if scheduled or self.faults:
            fault = scheduled or self.faults.popleft()
            return web.Response(
                status=fault.status,
                body=fault.body,
                content_type=fault.content_type,
                headers=fault.headers,
            )
        return None


def int_param(request: web.Request, name: str, default: int) -> int | None:
    """A query parameter as an integer; None if it is not one."""
    try:
        return int(request.query.get(name, str(default)))
    except ValueError:
        return None
