"""Reading a ledger that pages by number (Mifumo, Cloudflare) down to a floor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from dialwatch.errors import BadResponse
from dialwatch.model import LedgerItem

MAX_PAGES = 10_000  # a runaway guard: 1M items at 100 a page


class Lenient(BaseModel):
    """A response model: unknown fields are the API growing, not an error."""

    model_config = ConfigDict(extra="ignore")


class NumberedPage(NamedTuple):
    items: list[LedgerItem]
    more: bool  # the API says another page follows
    total: int | None  # how many records the API says the whole list holds
    size: int | None = None  # records on this page, if some are not items (not money)


async def read_numbered(
    fetch: Callable[[int], Awaitable[NumberedPage]], floor: datetime, url: str
) -> tuple[list[LedgerItem], int]:
    """Every item at or after `floor`, newest first, and how many pages that took.

    Pages are read from 1 until the API says there are no more or, while pages come
    newest first, until one reaches below `floor`. Numbered pages shift as items arrive
    during the read: an item pushed onto the next page is read twice (its id
    de-duplicates it) and none is skipped. A list that ends before the count the API
    gave, or a page that repeats the one before, raises BadResponse: the check fails
    and the cursor stays, rather than quietly missing items.
    """
    found: list[LedgerItem] = []
    newest_first = True
    previous: LedgerItem | None = None
    previous_keys: list[str] = []
    read = 0
    for number in range(1, MAX_PAGES + 1):
        page = await fetch(number)
        keys = [item.key for item in page.items]
        if keys and keys == previous_keys:
            raise BadResponse(f"page {number} repeats page {number - 1}", url=url)
        previous_keys = keys
        size = len(page.items) if page.size is None else page.size
        read += size
        for item in page.items:
            if previous is not None and item.occurred_at > previous.occurred_at:
                newest_first = False
            previous = item
        found += [item for item in page.items if item.occurred_at >= floor]
        if page.more and not size:
            raise BadResponse(
                f"pagination ended early: page {number} is empty but the API says more follow",
                url=url,
            )
        if newest_first and page.items and page.items[-1].occurred_at < floor:
            break
        if not page.more:
            if page.total is not None and read < page.total:
                raise BadResponse(
                    f"pagination ended early: the API counts {page.total} items, "
                    f"its pages held {read}",
                    url=url,
                )
            break
    else:
        raise BadResponse(f"more than {MAX_PAGES} pages: stopped reading", url=url)
    found.sort(key=lambda item: (item.occurred_at, item.key), reverse=True)
    return found, number
