"""Reading a ledger that pages by number (Mifumo, Cloudflare) down to a floor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NamedTuple

from dialwatch.errors import BadResponse
from dialwatch.model import ActivityStats, LedgerItem

MAX_PAGES = 10_000  # a runaway guard: 1M items at 100 a page


class NumberedPage(NamedTuple):
    items: list[LedgerItem]
    more: bool  # the API says another page follows
    total: int | None  # how many records the API says the whole list holds
    size: int | None = None  # records on this page, if some are not items (not money)


async def read_numbered(
    fetch: Callable[[int], Awaitable[NumberedPage]],
    floor: datetime,
    url: str,
    stats: ActivityStats,
) -> list[LedgerItem]:
    """Every item at or after `floor`, newest first; the pages read go into `stats`.

    The order of the list is read off page 1. Oldest first (Mifumo's documented
    example), new items are on the last pages: they are read from the last page back
    to the one that reaches below `floor`. Otherwise pages are read from 1 until the API
    says there are no more or, while pages come newest first, until one reaches below
    `floor`. Numbered pages shift as items arrive during the read: an item pushed onto
    the next page is read twice (its id de-duplicates it) and none is skipped; one added
    at the end after the count was taken is read by the next check. A list that ends
    before the count the API gave, or a page that repeats the one before, raises
    BadResponse: the check fails and the cursor stays, rather than quietly missing items.
    """
    first = await fetch(1)
    found: list[LedgerItem] | None = None
    pages = 1
    if first.more and first.total and _ascending(first.items):
        found, pages = await _from_the_end(fetch, first, floor, url)
    if found is None:
        found, pages = await _in_order(fetch, first, floor, url)
    found.sort(key=lambda item: (item.occurred_at, item.key), reverse=True)
    stats.requests += pages
    return found


def _ascending(items: list[LedgerItem]) -> bool:
    times = [item.occurred_at for item in items]
    return len(set(times)) > 1 and times == sorted(times)


def _size(page: NumberedPage) -> int:
    return len(page.items) if page.size is None else page.size


async def _from_the_end(
    fetch: Callable[[int], Awaitable[NumberedPage]],
    first: NumberedPage,
    floor: datetime,
    url: str,
) -> tuple[list[LedgerItem] | None, int]:
    """Oldest first: the last pages back to `floor`. None if the pages turn out not to
    be in one order after all (then everything is read in order)."""
    assert first.total is not None
    last = -(-first.total // _size(first))
    found: list[LedgerItem] = []
    after: LedgerItem | None = None  # the oldest item of the page read before
    for number in range(last, 1, -1):
        page = await fetch(number)
        if not _size(page):
            raise BadResponse(
                f"pagination ended early: page {number} of the {last} that "
                f"{first.total} items fill is empty",
                url=url,
            )
        items = page.items
        times = [item.occurred_at for item in items]
        if times != sorted(times) or (
            after and items and items[-1].occurred_at > after.occurred_at
        ):
            return None, last - number + 2
        found += [item for item in items if item.occurred_at >= floor]
        if items and items[0].occurred_at < floor:
            return found, last - number + 2
        after = items[0] if items else after
    found += [item for item in first.items if item.occurred_at >= floor]
    return found, last


async def _in_order(
    fetch: Callable[[int], Awaitable[NumberedPage]],
    first: NumberedPage,
    floor: datetime,
    url: str,
) -> tuple[list[LedgerItem], int]:
    found: list[LedgerItem] = []
    newest_first = True
    previous: LedgerItem | None = None
    previous_keys: list[str] = []
    read = 0
    page = first
    for number in range(1, MAX_PAGES + 1):
        if number > 1:
            page = await fetch(number)
        keys = [item.key for item in page.items]
        if keys and keys == previous_keys:
            raise BadResponse(f"page {number} repeats page {number - 1}", url=url)
        previous_keys = keys
        size = _size(page)
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
            return found, number
        if not page.more:
            if page.total is not None and read < page.total:
                raise BadResponse(
                    f"pagination ended early: the API counts {page.total} items, "
                    f"its pages held {read}",
                    url=url,
                )
            return found, number
    raise BadResponse(f"more than {MAX_PAGES} pages: stopped reading", url=url)
