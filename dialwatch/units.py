"""User-written amounts and durations, parsed in one place.

Money is integer minor units (cents) with a currency code; never a float. The same
type carries counted units such as SMS credits (currency "credits", no fractions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP"}
_SYMBOL_OF = {code: symbol for symbol, code in _SYMBOLS.items()}
CREDITS = "credits"  # prepaid units (Mifumo SMS credits): counted, not money
# Digits after the point in each currency's minor unit (ISO 4217); 2 for the rest.
_DIGITS = {CREDITS: 0, "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UGX": 0,
           "XAF": 0, "XOF": 0, "BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3}  # fmt: skip
_MONEY = re.compile(
    r"^\s*(?P<sign>-)?\s*(?P<symbol>[$€£])?\s*"
    r"(?P<amount>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"  # thousands separators, as printed
    r"\s*(?P<code>[A-Za-z]{3}|credits?)?\s*$",
    re.IGNORECASE,
)


def minor_digits(currency: str) -> int:
    return _DIGITS.get(currency, 2)


def to_minor(amount: Decimal, currency: str) -> int:
    """An exact amount in major units (as an API sends it) in minor units; raises
    ValueError if it has a fraction of the smallest unit, rather than rounding money."""
    minor = amount.scaleb(minor_digits(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} {currency} has a fraction of the smallest unit")
    return int(minor)


@dataclass(frozen=True, order=True)
class Money:
    """An exact amount in minor units (cents) of one currency."""

    cents: int
    currency: str = "USD"

    def __str__(self) -> str:
        sign = "-" if self.cents < 0 else ""
        digits = minor_digits(self.currency)
        units, minor = divmod(abs(self.cents), 10**digits)
        number = f"{units:,}.{minor:0{digits}d}" if digits else f"{units:,}"
        symbol = _SYMBOL_OF.get(self.currency)
        if symbol:
            return f"{sign}{symbol}{number}"
        return f"{sign}{number} {self.currency}"

    @property
    def is_money(self) -> bool:
        return self.currency != CREDITS

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.cents + other.cents, self.currency)


def parse_money(text: object) -> Money:
    """Parse "$50", "$50.00", "50 USD", "-$5" or "500 credits" into Money; floats are
    refused."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(
            'money must be written as a string such as "$50.00" or "50 USD", not a '
            f"{type(text).__name__}"
        )
    match = _MONEY.match(str(text))
    if not match or (match["symbol"] and match["code"]) or not (match["symbol"] or match["code"]):
        raise ValueError(
            f'{text!r} is not an amount; write it like "$50.00", "50 USD" or "500 credits"'
        )
    try:
        amount = Decimal(match["amount"].replace(",", ""))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise ValueError(f"{text!r} is not a number") from exc
    code = (match["code"] or "").lower()
    if match["symbol"]:
        currency = _SYMBOLS[match["symbol"]]
    else:
        currency = CREDITS if code.startswith("credit") else code.upper()
    try:
        minor = to_minor(amount, currency)
    except ValueError:
        unit = "a credit" if currency == CREDITS else "the smallest unit (a cent)"
        raise ValueError(f"{text!r} has a fraction of {unit}") from None
    return Money(-minor if match["sign"] else minor, currency)


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
