"""Money and durations, parsed in one place; money never passes through a float."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dialwatch.units import Money, format_duration, parse_duration, parse_money


@pytest.mark.parametrize(
    ("text", "money"),
    [
        ("$50", Money(5000, "USD")),
        ("$50.00", Money(5000, "USD")),
        ("$0.07", Money(7, "USD")),
        ("50 USD", Money(5000, "USD")),
        ("12.34 eur", Money(1234, "EUR")),
        ("-$5", Money(-500, "USD")),
        ("$1234567.89", Money(123456789, "USD")),
        ("$4,800.00", Money(480000, "USD")),
        ("1,234,567 EUR", Money(123456700, "EUR")),
    ],
)
def test_parse_money_is_exact(text: str, money: Money) -> None:
    """User-written amounts become exact integer cents."""
    assert parse_money(text) == money


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (50.5, "not a float"),
        ("50", "is not an amount"),
        ("$5.001", "a fraction of the smallest unit"),
        ("12.5 credits", "a fraction of a credit"),
        ("$50 USD", "is not an amount"),
        ("fifty dollars", "is not an amount"),
        ("$4,80.00", "is not an amount"),
        (True, "not a bool"),
    ],
)
def test_parse_money_rejects_ambiguous_amounts(value: object, error: str) -> None:
    """Floats, bare numbers and sub-cent amounts are refused with a reason."""
    with pytest.raises(ValueError, match=error):
        parse_money(value)


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(4000), "$40.00"),
        (Money(-320), "-$3.20"),
        (Money(123456789), "$1,234,567.89"),
        (Money(500, "CHF"), "5.00 CHF"),
    ],
)
def test_money_formats_for_people(money: Money, text: str) -> None:
    """Amounts print with symbol, thousands separators and two decimals."""
    assert str(money) == text


def test_money_refuses_to_add_currencies() -> None:
    """Adding USD to EUR is an error, not a silent wrong sum."""
    with pytest.raises(ValueError, match="cannot add EUR to USD"):
        _ = Money(1) + Money(1, "EUR")


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        (30, timedelta(seconds=30)),
        ("90", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("4h", timedelta(hours=4)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: object, delta: timedelta) -> None:
    """Seconds or unit-suffixed durations parse to the same timedelta."""
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["soon", "5 minutes", "-5s", "4hh", ""])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    """Anything else is an error that shows the valid forms."""
    with pytest.raises(ValueError, match="30s, 5m, 4h"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    """Durations print the way they are written in rules files."""
    assert [format_duration(parse_duration(t)) for t in ("4h", "1h30m", "2d3h", "45s", "0s")] == [
        "4h",
        "1h30m",
        "2d3h",
        "45s",
        "0s",
    ]


def test_the_default_resolve_margin_is_at_least_one_whole_unit_of_the_thresholds_own() -> None:
    """5% of the threshold, at least one whole unit: $1.00 for dollars, 1 credit for
    credits (not 100 credits: a 500-credit threshold resolves at 525, not 600)."""
    from dialwatch.rules.schema import BalanceBelow

    def margin(threshold: str) -> Money:
        rule = BalanceBelow.model_validate(
            {"name": "low", "kind": "balance_below", "threshold": threshold}
        )
        return rule.clear_margin

    assert margin("500 credits") == Money(25, "credits")
    assert margin("10 credits") == Money(1, "credits")
    assert margin("$10.00") == Money(100)
    assert margin("$500.00") == Money(2500)
    assert margin("1000 JPY") == Money(50, "JPY")
