"""A backtest's result as JSON (read by scripts: the shape is documented and tested),
as text for a terminal, and as one self-contained HTML page (inline SVG, no script)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from dialwatch.backtest.engine import AccountBacktest
from dialwatch.backtest.replay import Episode, RuleResult
from dialwatch.rules.schema import BalanceBelow, RulesFile, SpendAbove
from dialwatch.units import Money, format_duration


@dataclass
class Backtest:
    since: datetime
    until: datetime
    rules: RulesFile
    accounts: list[AccountBacktest] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # account, provider, why
    suggestions: str | None = None  # YAML, with comments


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(result: Backtest) -> dict[str, Any]:
    accounts: list[dict[str, Any]] = []
    for a in result.accounts:
        balance = a.history.balance
        accounts.append(
            {
                "account": a.account,
                "provider": a.provider,
                "items": a.history.items,
                "pages": a.history.pages,
                "balance": None
                if balance is None
                else {
                    "start_cents": balance.start_cents,
                    "end_cents": balance.end_cents,
                    "min_cents": balance.min_cents,
                    "min_at": iso(balance.min_at),
                    "currency": a.history.currency,
                },
                "rules": [_rule_json(r, result.until) for r in a.replay.results.values()],
                "skipped": [{"rule": rule, "reason": why} for rule, why in a.skipped],
                "notifications_per_channel_day": _per_channel_day(a),
            }
        )
    for account, provider, why in result.failed:
        accounts.append({"account": account, "provider": provider, "error": why})
    out: dict[str, Any] = {
        "since": iso(result.since),
        "until": iso(result.until),
        "accounts": accounts,
    }
    if result.suggestions is not None:
        out["suggestions"] = result.suggestions
    return out


def _rule_json(result: RuleResult, until: datetime) -> dict[str, Any]:
    return {
        "rule": result.rule,
        "kind": result.kind,
        "fired": len(result.episodes),
        "notifications": result.notifications,
        "notifications_by_channel": dict(result.by_channel),
        "firing_seconds": result.firing_seconds(until),
        "episodes": [
            {
                "start": iso(e.start),
                "end": iso(e.end) if e.end else None,
                "value_at_start": e.value_at_start,
                "worst": e.worst,
            }
            for e in result.episodes
        ],
    }


def _per_channel_day(a: AccountBacktest) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for (channel, day), count in sorted(a.replay.per_channel_day.items()):
        table[channel][day.isoformat()] = count
    return dict(table)


def to_text(result: Backtest) -> str:
    span = result.until - result.since
    lines = [f"Backtest {iso(result.since)} .. {iso(result.until)} ({format_duration(span)})"]
    for a in result.accounts:
        currency = a.history.currency
        lines += ["", f"{a.account} ({a.provider}): {a.history.items} ledger items"]
        if a.history.balance is not None:
            b = a.history.balance
            lines.append(
                f"  balance {Money(b.start_cents, currency)} -> {Money(b.end_cents, currency)}, "
                f"lowest {Money(b.min_cents, currency)} at {iso(b.min_at)}"
            )
        for r in a.replay.results.values():
            share = r.firing_seconds(result.until) / max(span.total_seconds(), 1)
            channels = ", ".join(f"{c} {n}" for c, n in sorted(r.by_channel.items())) or "none"
            lines.append(
                f"  {r.rule} ({r.kind}): fired {len(r.episodes)} time(s), "
                f"{r.notifications} notification(s) ({channels}), firing {share:.1%} of the time"
            )
            for e in r.episodes[:10]:
                lines.append("    " + _episode_text(e, r, currency))
            if len(r.episodes) > 10:
                lines.append(f"    ... and {len(r.episodes) - 10} more")
        for rule, why in a.skipped:
            lines.append(f"  {rule}: skipped: {why}")
        table = _per_channel_day(a)
        if table:
            lines.append("  notifications per day:")
            for day in sorted({d for counts in table.values() for d in counts}):
                counts = "  ".join(f"{c} {table[c].get(day, 0)}" for c in sorted(table))
                lines.append(f"    {day}  {counts}")
        days = max(span.days, 1)
        for channel, per_day in table.items():
            busiest = max(per_day.items(), key=lambda kv: kv[1])
            total = sum(per_day.values())
            lines.append(
                f"  channel {channel}: {total} notification(s), {total / days:.1f}/day, "
                f"busiest {busiest[0]} ({busiest[1]})"
            )
    for account, provider, why in result.failed:
        lines += ["", f"{account} ({provider}): FAILED: {why}"]
    if result.suggestions:
        lines += ["", "Suggested rules (paste under rules:):", result.suggestions]
    return "\n".join(lines) + "\n"


def _episode_text(e: Episode, r: RuleResult, currency: str) -> str:
    end = iso(e.end) if e.end else "still firing"
    if r.kind in ("usage_item", "ledger_event"):
        return f"{iso(e.start)}: {e.value_at_start} item(s)"
    if e.value_at_start is None:
        return f"{iso(e.start)} .. {end}"
    return (
        f"{iso(e.start)} .. {end}: {Money(e.value_at_start, currency)} at start, "
        f"{Money(e.worst if e.worst is not None else e.value_at_start, currency)} at worst"
    )


# The HTML page: one file a finance lead can forward.
W, H, PAD = 860, 240, 48
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
main{max-width:920px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px}
.sub{color:#52606d;margin:0 0 16px}
section{background:#fff;border-radius:10px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 3px #0002}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{color:#52606d;font-weight:600;font-size:13px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.kpis{display:flex;gap:12px;flex-wrap:wrap}.kpi{flex:1;min-width:150px;background:#f0f4f8;border-radius:8px;padding:10px 12px}
.kpi b{display:block;font-size:20px}.muted{color:#7b8794}
svg{max-width:100%;height:auto;background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#52606d}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
"""


def to_html(result: Backtest) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>dialwatch backtest</title><style>{STYLE}</style></head><body><main>",
        "<h1>What these rules would have done</h1>",
        f'<p class="sub">dialwatch backtest, {escape(iso(result.since))} to '
        f"{escape(iso(result.until))}: the accounts' real ledgers replayed through the "
        "rules, one check per interval. Nothing was sent.</p>",
    ]
    for a in result.accounts:
        parts.append(_account_html(a, result))
    for account, provider, why in result.failed:
        parts.append(
            f"<section><h2>{escape(account)} ({escape(provider)})</h2>"
            f'<p class="muted">Could not be read: {escape(why)}</p></section>'
        )
    if result.suggestions:
        parts.append(
            "<section><h2>Suggested thresholds</h2><pre>"
            f"{escape(result.suggestions)}</pre></section>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _account_html(a: AccountBacktest, result: Backtest) -> str:
    currency = a.history.currency
    rules = {r.name: r for r in result.rules.rules}
    kpis = [("Ledger items", f"{a.history.items:,}")]
    if a.history.balance is not None:
        b = a.history.balance
        kpis += [
            ("Balance at start", str(Money(b.start_cents, currency))),
            ("Balance at end", str(Money(b.end_cents, currency))),
            ("Lowest", f"{Money(b.min_cents, currency)}"),
        ]
    fired = sum(len(r.episodes) for r in a.replay.results.values())
    sent = sum(r.notifications for r in a.replay.results.values())
    kpis += [("Alerts fired", str(fired)), ("Notifications", str(sent))]
    out = [f"<section><h2>{escape(a.account)} <span class=muted>({escape(a.provider)})</span></h2>"]
    out.append(
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi"><span class=muted>{escape(k)}</span><b>{escape(v)}</b></div>'
            for k, v in kpis
        )
        + "</div>"
    )
    if a.history.balance is not None:
        thresholds = [
            (name, rule.threshold.cents)
            for name in a.replay.results
            if isinstance(rule := rules.get(name), BalanceBelow)
        ]
        shaded = [e for n, _ in thresholds for e in a.replay.results[n].episodes]
        out.append("<h3>Balance</h3>")
        out.append(
            _line_chart(
                a.history.checks, a.history.balances, thresholds, shaded, result.until, currency
            )
        )
    if a.history.hourly:
        limits_hour = [
            (name, rule.amount.cents)
            for name in a.replay.results
            if isinstance(rule := rules.get(name), SpendAbove) and rule.window == timedelta(hours=1)
        ]
        limits_day = [
            (name, rule.amount.cents)
            for name in a.replay.results
            if isinstance(rule := rules.get(name), SpendAbove)
            and (rule.window == timedelta(hours=24) or rule.period == "day")
        ]
        out.append("<h3>Spend per hour</h3>")
        out.append(_bar_chart(a.history.hourly, limits_hour, currency, "hour"))
        out.append("<h3>Spend per day</h3>")
        out.append(_bar_chart(a.history.daily, limits_day, currency, "day"))
    out.append("<h3>Rules</h3><table><tr><th>Rule</th><th>Fired</th><th>Notifications</th>"
               "<th>Time firing</th><th>Episodes</th></tr>")  # fmt: skip
    span = max((result.until - result.since).total_seconds(), 1)
    for r in a.replay.results.values():
        episodes = "<br>".join(escape(_episode_text(e, r, currency)) for e in r.episodes[:6])
        if len(r.episodes) > 6:
            episodes += f"<br><span class=muted>and {len(r.episodes) - 6} more</span>"
        out.append(
            f"<tr><td>{escape(r.rule)}<br><span class=muted>{escape(r.kind)}</span></td>"
            f"<td class=n>{len(r.episodes)}</td><td class=n>{r.notifications}</td>"
            f"<td class=n>{r.firing_seconds(result.until) / span:.1%}</td>"
            f"<td>{episodes or '<span class=muted>never fired</span>'}</td></tr>"
        )
    out.append("</table>")
    for name, why in a.skipped:
        out.append(f'<p class="muted">{escape(name)}: not replayed: {escape(why)}</p>')
    per_day = _per_channel_day(a)
    if per_day:
        out.append("<h3>Notifications per channel</h3><table><tr><th>Channel</th>"
                   "<th>Total</th><th>Per day</th><th>Busiest day</th></tr>")  # fmt: skip
        days = max((result.until - result.since).days, 1)
        for channel, counts in per_day.items():
            total = sum(counts.values())
            day, most = max(counts.items(), key=lambda kv: kv[1])
            out.append(
                f"<tr><td>{escape(channel)}</td><td class=n>{total}</td>"
                f"<td class=n>{total / days:.1f}</td><td>{escape(day)} ({most})</td></tr>"
            )
        out.append("</table>")
    out.append("</section>")
    return "\n".join(out)


COLOURS = ("#d64545", "#e67e22", "#8e44ad", "#2c7a7b")


def _line_chart(
    checks: list[datetime],
    values: list[int | None],
    thresholds: list[tuple[str, int]],
    shaded: list[Episode],
    until: datetime,
    currency: str,
) -> str:
    points = [(t, v) for t, v in zip(checks, values, strict=True) if v is not None]
    if not points:
        return '<p class="muted">No balance history.</p>'
    step = max(1, len(points) // 1200)  # about one point per pixel; keep each bucket's low
    sampled = [min(points[i : i + step], key=lambda p: p[1]) for i in range(0, len(points), step)]
    levels = [v for _, v in sampled] + [c for _, c in thresholds] + [0]
    low, high = min(levels), max(levels)
    span_v = max(high - low, 1)
    start, end = points[0][0], until
    span_t = max((end - start).total_seconds(), 1)

    def x(t: datetime) -> float:
        return PAD + (W - 2 * PAD) * (t - start).total_seconds() / span_t

    def y(v: int) -> float:
        return H - PAD - (H - 2 * PAD) * (v - low) / span_v

    svg = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="Balance">']
    for e in shaded:
        left, right = x(e.start), x(e.end or until)
        svg.append(
            f'<rect x="{left:.1f}" y="{PAD}" width="{max(right - left, 1):.1f}" height="{H - 2 * PAD}" fill="#fde2e2"/>'
        )
    svg.append(
        f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#cbd2d9"/>'
    )
    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in sampled)
    svg.append(f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.6" points="{line}"/>')
    legend = ['<span><i class="sw" style="background:#1f6feb"></i>balance</span>']
    _limit_lines(thresholds, y, currency, svg, legend)
    if shaded:
        legend.append('<span><i class="sw" style="background:#fde2e2"></i>firing</span>')
    svg += _axes(low, high, y, start, end, x, currency)
    svg.append("</svg>")
    return "".join(svg) + f'<div class="legend">{"".join(legend)}</div>'


def _bar_chart(
    values: list[tuple[datetime, int]], limits: list[tuple[str, int]], currency: str, unit: str
) -> str:
    if not values:
        return '<p class="muted">No spend.</p>'
    high = max([v for _, v in values] + [c for _, c in limits] + [1])
    slot = (W - 2 * PAD) / len(values)

    def y(v: int) -> float:
        return H - PAD - (H - 2 * PAD) * v / high

    svg = [
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="Spend per {unit}">'
    ]
    for i, (_, v) in enumerate(values):
        top = y(v)
        svg.append(
            f'<rect x="{PAD + i * slot:.2f}" y="{top:.1f}" width="{max(slot * 0.8, 0.6):.2f}" height="{H - PAD - top:.1f}" fill="#f59f00"/>'
        )
    legend = [f'<span><i class="sw" style="background:#f59f00"></i>spend per {unit}</span>']
    _limit_lines(limits, y, currency, svg, legend)
    start, end = values[0][0], values[-1][0]
    span_t = max((end - start).total_seconds(), 1)
    svg += _axes(
        0,
        high,
        y,
        start,
        end,
        lambda t: PAD + (W - 2 * PAD) * (t - start).total_seconds() / span_t,
        currency,
    )
    svg.append("</svg>")
    return "".join(svg) + f'<div class="legend">{"".join(legend)}</div>'


def _limit_lines(
    limits: list[tuple[str, int]],
    y: Callable[[int], float],
    currency: str,
    svg: list[str],
    legend: list[str],
) -> None:
    """A dashed line across the chart for each rule's limit, and its legend entry."""
    for i, (name, cents) in enumerate(limits):
        colour = COLOURS[i % len(COLOURS)]
        svg.append(
            f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(cents):.1f}" y2="{y(cents):.1f}" stroke="{colour}" stroke-dasharray="5 4"/>'
        )
        legend.append(
            f'<span><i class="sw" style="background:{colour}"></i>{escape(name)} {escape(str(Money(cents, currency)))}</span>'
        )


def _axes(
    low: int, high: int, y: Any, start: datetime, end: datetime, x: Any, currency: str
) -> list[str]:
    out = []
    for value in (low, (low + high) // 2, high):
        out.append(
            f'<text x="4" y="{y(value) + 4:.1f}">{escape(str(Money(value, currency)))}</text>'
        )
    ticks = 6
    for k in range(ticks + 1):
        t = start + (end - start) * k / ticks
        out.append(f'<text x="{x(t) - 18:.1f}" y="{H - PAD + 16}">{t:%b %d}</text>')
    return out
