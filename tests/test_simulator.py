"""The simulated Dial API follows the documented activity contract, so tests on it mean something."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from dialwatch.simulators.dial import DialSimulator
from tests.conftest import API_KEY
from tests.ledger_items import at, credit, usage


async def get(dial: DialSimulator, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{dial.base_url}/api/v1/billing/activity",
            params=params,
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response,
    ):
        return response.status, await response.json()


@pytest.fixture
def ledger(dial: DialSimulator) -> DialSimulator:
    dial.ledger.extend([usage(at(-i), i, call=f"c{i}") for i in range(1, 6)])
    dial.ledger.extend([credit(at(-3), 500), credit(at(-10), 700)])
    return dial


async def test_pages_are_newest_first_and_starting_after_is_exclusive(
    ledger: DialSimulator,
) -> None:
    """starting_after returns only strictly older items; ties at that instant are skipped."""
    status, page = await get(ledger, limit="3")
    assert status == 200
    assert [i["occurredAt"] for i in page["data"]] == [at(-1), at(-2), at(-3)]
    assert page["hasMore"] is True

    _, older = await get(ledger, limit="100", starting_after=at(-3))
    assert [i["occurredAt"] for i in older["data"]] == [at(-4), at(-5), at(-10)]
    assert older["hasMore"] is False


@pytest.mark.parametrize(("limit", "count"), [("0", 1), ("-5", 1), ("500", 7), ("2", 2)])
async def test_limit_is_clamped_to_1_through_100(
    ledger: DialSimulator, limit: str, count: int
) -> None:
    """Out-of-range limits are clamped, not refused."""
    _, page = await get(ledger, limit=limit)
    assert len(page["data"]) == count


async def test_filter_selects_usage_or_payment_credits(ledger: DialSimulator) -> None:
    """filter=usage and filter=payment-credits split the feed by type."""
    _, usage_page = await get(ledger, filter="usage")
    _, money_page = await get(ledger, filter="payment-credits")
    assert {i["type"] for i in usage_page["data"]} == {"usage"}
    assert [i["amountCents"] for i in money_page["data"]] == [500, 700]
    assert money_page["data"][0]["fareName"] is None  # other types' fields sent as null


@pytest.mark.parametrize(
    "params",
    [{"limit": "ten"}, {"starting_after": "yesterday"}, {"filter": "refunds"}],
)
async def test_bad_parameters_are_400_with_a_validation_object(
    ledger: DialSimulator, params: dict[str, str]
) -> None:
    """Invalid limit, starting_after or filter: 400 with Dial's validation-error shape."""
    status, body = await get(ledger, **params)
    assert status == 400
    assert list(body["error"]["fieldErrors"]) == list(params)


async def test_missing_key_is_401(ledger: DialSimulator) -> None:
    """Without the key, the activity feed answers 401 with an error message."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{ledger.base_url}/api/v1/billing/activity") as response,
    ):
        assert response.status == 401
        assert await response.json() == {"error": "Invalid or missing API key"}
