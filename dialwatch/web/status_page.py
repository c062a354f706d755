"""The status page: one server-rendered HTML page with inline SVG charts, no JavaScript.

Everything on it is escaped, and it names channels, never their URLs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.alerting.silences import Silence
from dialwatch.delivery.outbox import OutboxRow
from dialwatch.pipeline.cycle import Watcher
from dialwatch.providers import REGISTRY
from dialwatch.store import ReplicaInfo
from dialwatch.units import Money

DAYS = 7
REPLICAS_SHOWN = timedelta(days=1)  # replicas seen this recently are listed
WIDTH, HEIGHT, PAD = 640, 180, 36


async def render_status_page(watchers: Sequence[Watcher], now: datetime) -> str:
    """The page for every account watched: a summary, then a section per account."""
    store = watchers[0].store
    notes = await store.recent_notifications(15)
    names = ", ".join(w.account for w in watchers)
    balances = {w.account: await store.last_balance(w.account) for w in watchers}
    sections = [await _account_section(w, now, balances[w.account]) for w in watchers]
    silences = await store.silences(now)
    replicas = await store.replicas(seen_within=REPLICAS_SHOWN)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="60">
<title>dialwatch: {escape(names)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 760px; color: #222; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.2rem; margin-top: 2.5rem; }}
h3 {{ font-size: 1rem; margin-top: 1.5rem; }}
.big {{ font-size: 2rem; font-weight: 600; }} .muted {{ color: #666; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eee; vertical-align: top; }}
.bad {{ color: #b00020; }} svg text {{ font-size: 11px; fill: #555; }}
</style></head><body>
<h1>dialwatch: {len(watchers)} account(s)</h1>
<p class="muted">Page generated {_when(now)}.</p>
{_accounts_table(watchers, balances)}
{"".join(sections)}
<h2>Replicas</h2>
{_replicas_table(replicas)}
<h2>Silences</h2>
{_silences_table(silences)}
<h2>Last notifications</h2>
{_notifications_table(notes)}
</body></html>
"""


def _accounts_table(watchers: Sequence[Watcher], balances: Mapping[str, Money | None]) -> str:
    rows = []
    for w in watchers:
        balance = balances[w.account]
        state = (
            f'<span class="bad">failing: {escape(w.health.last_error)}</span>'
            if w.health.last_error
            else f"ok, last success {_when(w.health.last_success)}"
        )
        rows.append(
            f'<tr><td><a href="#account-{escape(w.account)}">{escape(w.account)}</a></td>'
            f"<td>{escape(w.provider)}</td><td>{escape(str(balance)) if balance else '-'}</td>"
            f"<td>{state}</td></tr>"
        )
    return (
        '<table id="accounts"><tr><th>Account</th><th>Provider</th><th>Balance</th>'
        f"<th>Checks</th></tr>{''.join(rows)}</table>"
    )


async def _account_section(watcher: Watcher, now: datetime, balance: Money | None) -> str:
    store, account, health = watcher.store, watcher.account, watcher.health
    since = now - timedelta(days=DAYS)
    days = [(now - timedelta(days=n)).strftime("%Y-%m-%d") for n in range(DAYS - 1, -1, -1)]
    currency = await store.spend_currency(account)
    spend = await store.spend_by_day(account, now - timedelta(days=DAYS - 1), currency)
    states = await store.alert_states(account)
    plugin = REGISTRY[watcher.provider]
    severity = {rule.name: rule.severity for rule in watcher.rules.rules}
    firing = sorted(
        (name, state) for name, state in states.items() if state.status is Status.FIRING
    )
    charts = ""
    if plugin.balance_unit is not None:
        history = await store.balance_history(account, since)
        charts += f"""<p>Balance <span class="big" id="balance-{escape(account)}">{escape(str(balance)) if balance else "unknown"}</span></p>
<h3>Balance, last {DAYS} days</h3>
{_balance_chart(account, history, since, now)}"""
    if plugin.has_money:
        charts += f"""<h3>Spend per day (UTC)</h3>
{_spend_chart(account, days, spend, currency)}"""
    last_error = (
        f'<span class="bad" id="last-error-{escape(account)}">Last error: '
        f"{escape(health.last_error)}</span>"
        if health.last_error
        else ""
    )
    return f"""<section id="account-{escape(account)}">
<h2>{escape(account)} <span class="muted">({escape(watcher.provider)})</span></h2>
<p class="muted">Last check {_when(health.last_check)};
last successful check {_when(health.last_success)}. {last_error}</p>
{charts}
<h3>Firing now</h3>
{_firing_table(account, firing, severity)}
</section>"""


def _balance_chart(
    account: str, history: list[tuple[datetime, Money]], since: datetime, now: datetime
) -> str:
    if not history:
        return f'<p class="muted" id="balance-chart-{escape(account)}">No balance recorded yet.</p>'
    cents = [money.cents for _, money in history]
    low, high = min(*cents, 0), max(*cents, 0)
    span = max(high - low, 1)
    total = (now - since).total_seconds()

    def x(at: datetime) -> float:
        return PAD + (WIDTH - 2 * PAD) * (at - since).total_seconds() / total

    def y(value: int) -> float:
        return HEIGHT - PAD + (-(HEIGHT - 2 * PAD) * (value - low) / span)

    points = " ".join(f"{x(at):.1f},{y(m.cents):.1f}" for at, m in history)
    currency = history[-1][1].currency
    return f"""<svg id="balance-chart-{escape(account)}" width="{WIDTH}" height="{HEIGHT}" role="img"
 aria-label="Balance over the last {DAYS} days" data-points="{len(history)}">
<line x1="{PAD}" y1="{y(0):.1f}" x2="{WIDTH - PAD}" y2="{y(0):.1f}" stroke="#ccc"/>
<polyline id="balance-line-{escape(account)}" fill="none" stroke="#1565c0" stroke-width="2" points="{points}"/>
<text x="2" y="{y(high) + 4:.1f}">{escape(str(Money(high, currency)))}</text>
<text x="2" y="{y(low) + 4:.1f}">{escape(str(Money(low, currency)))}</text>
<text x="{PAD}" y="{HEIGHT - 8}">{since:%b %d}</text>
<text x="{WIDTH - PAD - 40}" y="{HEIGHT - 8}">{now:%b %d}</text>
</svg>"""


def _spend_chart(account: str, days: list[str], spend: dict[str, Money], currency: str) -> str:
    if not spend:
        return (
            f'<p class="muted" id="spend-chart-{escape(account)}">No spend recorded: add a '
            "spend rule to read the ledger.</p>"
        )
    most = max(m.cents for m in spend.values()) or 1
    slot = (WIDTH - 2 * PAD) / len(days)
    bars = []
    for i, day in enumerate(days):
        amount = spend.get(day, Money(0, currency))
        height = (HEIGHT - 2 * PAD) * amount.cents / most
        left = PAD + i * slot
        bars.append(
            f'<rect class="spend-bar" data-day="{day}" data-cents="{amount.cents}" '
            f'x="{left + 4:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{slot - 8:.1f}" '
            f'height="{height:.1f}" fill="#ef6c00"/>'
            f'<text x="{left + 4:.1f}" y="{HEIGHT - PAD - height - 4:.1f}">{escape(str(amount))}</text>'
            f'<text x="{left + 4:.1f}" y="{HEIGHT - 8}">{day[5:]}</text>'
        )
    return (
        f'<svg id="spend-chart-{escape(account)}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="Spend per day">{"".join(bars)}</svg>'
    )


def _firing_table(
    account: str, firing: list[tuple[str, AlertState]], severity: Mapping[str, str]
) -> str:
    if not firing:
        return f'<p id="firing-{escape(account)}">Nothing is firing.</p>'
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(severity.get(name, 'critical'))}</td>"
        f"<td>{_when(state.active_since)}</td></tr>"
        for name, state in firing
    )
    return f'<table id="firing-{escape(account)}"><tr><th>Rule</th><th>Severity</th><th>Since</th></tr>{rows}</table>'


def _replicas_table(replicas: list[ReplicaInfo]) -> str:
    if not replicas:
        return '<p id="replicas">No replica has reported yet.</p>'
    rows = "".join(
        f"<tr><td>{escape(r.name)}</td><td>{_when(r.last_seen)}</td>"
        f"<td>{escape(', '.join(r.accounts)) or '-'}</td></tr>"
        for r in replicas
    )
    return (
        '<table id="replicas"><tr><th>Replica</th><th>Last seen</th><th>Holds</th></tr>'
        f"{rows}</table>"
    )


def _silences_table(silences: list[Silence]) -> str:
    if not silences:
        return '<p id="silences">No silences in force.</p>'
    rows = "".join(
        f"<tr><td>{s.id}</td><td>{escape(s.rule)}</td><td>{escape(s.account or 'every account')}</td>"
        f"<td>{_when(s.ends_at)}</td><td>{escape(s.reason)}</td></tr>"
        for s in silences
    )
    return (
        '<table id="silences"><tr><th>#</th><th>Rule</th><th>Account</th><th>Until</th>'
        f"<th>Reason</th></tr>{rows}</table>"
    )


def _notifications_table(notes: list[OutboxRow]) -> str:
    if not notes:
        return '<p id="notifications">No notifications yet.</p>'
    rows = []
    for note in notes:
        if note.delivered_at:
            state = f"sent {_when(note.delivered_at)}"
        elif note.expired_at:
            state = '<span class="bad">expired</span>'
        else:
            error = f": {escape(note.last_error)}" if note.last_error else ""
            state = f'<span class="bad">pending{error}</span>'
        rows.append(
            f"<tr><td>{escape(note.channel)}</td>"
            f"<td>{escape(note.message.title)}</td><td>{state}</td></tr>"
        )
    return (
        '<table id="notifications"><tr><th>Channel</th><th>Notification</th><th>State</th></tr>'
        f"{''.join(rows)}</table>"
    )


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
