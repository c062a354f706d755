"""User-written amounts and durations, parsed in one place.

Money is integer minor units (cents) with a currency code; never a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP"}
_SYMBOL_OF = {code: symbol for symbol, code in _SYMBOLS.items()}
_MONEY = re.compile(
    r"^\s*(?P<sign>-)?\s*(?P<symbol>[$€£])?\s*"
    r"(?P<amount>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"  # thousands separators, as printed
    r"\s*(?P<code>[A-Za-z]{3})?\s*$"
)


@dataclass(frozen=True, order=True)
class Money:
    """An exact amount in minor units (cents) of one currency."""

    cents: int
    currency: str = "USD"

    def __str__(self) -> str:
        sign = "-" if self.cents < 0 else ""
        units, cents = divmod(abs(self.cents), 100)
        symbol = _SYMBOL_OF.get(self.currency)
        if symbol:
            return f"{sign}{symbol}{units:,}.{cents:02d}"
        return f"{sign}{units:,}.{cents:02d} {self.currency}"

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.cents + other.cents, self.currency)


def parse_money(text: object) -> Money:
    """Parse "$50", "$50.00", "50 USD" or "-$5" into Money; floats are refused."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(
            'money must be written as a string such as "$50.00" or "50 USD", not a '
            f"{type(text).__name__}"
        )
    match = _MONEY.match(str(text))
    if not match or (match["symbol"] and match["code"]) or not (match["symbol"] or match["code"]):
        raise ValueError(f'{text!r} is not an amount of money; write it like "$50.00" or "50 USD"')
    try:
        amount = Decimal(match["amount"].replace(",", ""))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise ValueError(f"{text!r} is not a number") from exc
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{text!r} has fractions of a cent")
    currency = _SYMBOLS[match["symbol"]] if match["symbol"] else match["code"].upper()
    return Money(-int(cents) if match["sign"] else int(cents), currency)


_DURATION_PART = re.compile(r"(\d+)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: object) -> timedelta:
    """Parse seconds (30) or a duration ("90s", "5m", "4h", "1h30m", "7d") into a timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or text like 5m, 4h, 7d")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=text)
    if not isinstance(text, str):
        raise ValueError("a duration is a number of seconds or text like 5m, 4h, 7d")
    compact = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return timedelta(seconds=float(compact))
    if not compact or _DURATION_PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 5m, 4h, 1h30m or 7d")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(compact))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a duration the way a person would say it: 4h, 1h30m, 2d3h, 45s."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    # Days only from 2d up: a window written as 24h or 36h reads back the same.
    units = (("d", 86400),) if seconds >= 2 * 86400 else ()
    for unit, size in (*units, ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
