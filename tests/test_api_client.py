"""Narrow client edge cases (aioresponses), where a real server adds nothing, and the
per-provider request limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from dialwatch.errors import RateLimited, RequestRejected, TransportError
from dialwatch.providers.http import ApiClient, RequestLimit, RetryPolicy, parse_retry_after
from tests.conftest import RecordingSleep

URL = "https://api.example.test"


def _raw(body: Any, url: str) -> Any:
    return body


async def test_connection_errors_are_retried_then_reported_without_the_key() -> None:
    """Four refused connections: three backoff sleeps, then a TransportError with the URL."""
    sleep = RecordingSleep()
    with aioresponses() as mocked:
        for _ in range(4):
            mocked.get(f"{URL}/x", exception=aiohttp.ClientConnectionError("refused"))
        async with aiohttp.ClientSession() as session:
            client = ApiClient(
                session,
                URL,
                {"Authorization": "Bearer sk_live_hidden"},
                sleep=sleep,
                jitter=lambda: 1.0,
            )
            with pytest.raises(TransportError) as caught:
                await client.get("/x", _raw)
    assert sleep.delays == [0.5, 1.0, 2.0]  # exponential, full jitter at its maximum
    assert "https://api.example.test/x" in str(caught.value)
    assert "sk_live_hidden" not in str(caught.value)


async def test_retry_after_longer_than_the_limit_gives_up_for_this_check() -> None:
    """A 429 asking for an hour is not slept through: the next interval tries again."""
    sleep = RecordingSleep()
    with aioresponses() as mocked:
        mocked.get(f"{URL}/x", status=429, headers={"Retry-After": "3600"}, body="{}")
        async with aiohttp.ClientSession() as session:
            client = ApiClient(session, URL, {}, sleep=sleep, policy=RetryPolicy())
            with pytest.raises(RateLimited) as caught:
                await client.get("/x", _raw)
    assert caught.value.retry_after == 3600
    assert sleep.delays == []


async def test_other_4xx_is_final_and_quotes_the_providers_error() -> None:
    """A 400 with Dial's validation object is reported once, not retried."""
    with aioresponses() as mocked:
        mocked.get(f"{URL}/x", status=400, payload={"error": {"message": "limit must be 1-100"}})
        async with aiohttp.ClientSession() as session:
            client = ApiClient(session, URL, {}, sleep=RecordingSleep())
            with pytest.raises(RequestRejected, match="limit must be 1-100"):
                await client.get("/x", _raw)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Both Retry-After forms of RFC 9110 are understood; garbage is ignored."""
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Sat, 21 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_a_providers_request_limit_caps_requests_in_flight_and_per_second() -> None:
    """At most `concurrency` requests are inside at once, the others wait their turn;
    past a burst of `per_second`, requests start no faster than the rate."""
    limit, gate = RequestLimit(3, 0), asyncio.Event()
    inside, peak = 0, 0

    async def request() -> None:
        nonlocal inside, peak
        async with limit:
            inside += 1
            peak = max(peak, inside)
            await gate.wait()
            inside -= 1

    tasks = [asyncio.create_task(request()) for _ in range(10)]
    for _ in range(10):  # every task runs to where it waits (scheduling, not time)
        await asyncio.sleep(0)
    assert inside == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert (inside, peak) == (0, 3)

    rated = RequestLimit(0, 4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(6):  # four at once, then one every 0.25 s
        async with rated:
            pass
    assert loop.time() - started >= 0.45
