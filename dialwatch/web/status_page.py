"""The status page: one server-rendered HTML page with inline SVG charts, no JavaScript
(a meta refresh every minute; the notification search is a plain GET form).

Everything on it is escaped, and it names channels, never their URLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from dialwatch.alerting.lifecycle import Status
from dialwatch.alerting.silences import Silence
from dialwatch.delivery.outbox import OutboxRow
from dialwatch.model import QuotaPeriod
from dialwatch.pipeline.cycle import Watcher
from dialwatch.providers import REGISTRY
from dialwatch.rules.schema import LEDGER_KINDS
from dialwatch.store import ReplicaInfo
from dialwatch.units import Money, format_duration

DAYS = 7
REPLICAS_SHOWN = timedelta(days=1)  # replicas seen this recently are listed
WIDTH, HEIGHT, PAD = 640, 180, 36


async def render_status_page(
    watchers: Sequence[Watcher], now: datetime, search: str | None = None
) -> str:
    """The page for every account watched: the answer at a glance (every account's
    state, balance, runway, spend today), what fires, then a section per account, the
    notifications (searchable), silences and replicas."""
    store = watchers[0].store
    notes = await store.recent_notifications(NOTES_SHOWN, search or None)
    names = ", ".join(w.account for w in watchers)
    glances = [await _glance(w, now) for w in watchers]
    sections = [await _account_section(w, now, g) for w, g in zip(watchers, glances, strict=True)]
    silences = await store.silences(now)
    replicas = await store.replicas(seen_within=REPLICAS_SHOWN)
    firing = [f for g in glances for f in g.alerts]
    worst = max((g.state for g in glances), key=STATES.index, default="ok")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60">
<title>{"🔴 " if worst == "red" else "🟠 " if worst == "amber" else ""}dialwatch: {escape(names)}</title>
<style>{STYLE}</style></head><body><main>
<header><h1>dialwatch</h1><p class="muted">{len(watchers)} account(s) · page of {_when(now)} ·
refreshes every minute</p></header>
<section class="card"><h2>At a glance</h2>{_glance_table(glances)}</section>
<section class="card"><h2>Firing now</h2>{_alerts_table(firing)}</section>
{"".join(sections)}
<section class="card" id="history"><h2>Notifications</h2>
<form method="get" action="#history"><input type="search" name="q" value="{escape(search or "")}"
 placeholder="search: rule, account, channel, text" aria-label="search notifications">
<button>Search</button></form>
{_notifications_table(notes, search)}</section>
<section class="card"><h2>Silences</h2>{_silences_table(silences)}</section>
<section class="card"><h2>Replicas</h2>{_replicas_table(replicas)}</section>
</main></body></html>
"""


NOTES_SHOWN = 50
STATES = ("ok", "amber", "red")
STYLE = """
:root{--red:#c62828;--amber:#b26a00;--green:#2e7d32;--muted:#66727f;--line:#e6e9ee}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#f4f6f8}
main{max-width:1040px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:0 0 10px}h3{font-size:15px;margin:16px 0 6px}
header{margin:4px 0 12px}.muted{color:var(--muted)}
.card{background:#fff;border-radius:10px;padding:14px 16px;margin:12px 0;box-shadow:0 1px 2px #0001}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:7px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;white-space:nowrap}
.pill.red,.pill.critical{background:var(--red)}.pill.amber,.pill.warning{background:var(--amber)}
.pill.ok{background:var(--green)}.pill.info{background:#2563eb}.pill.pending{background:#8a94a3}
.big{font-size:28px;font-weight:650}.bad{color:var(--red)}
svg{max-width:100%;height:auto}svg text{font-size:11px;fill:#555}
form{display:flex;gap:8px;margin:0 0 10px}input[type=search]{flex:1;min-width:0;padding:6px 8px;border:1px solid #cbd2d9;border-radius:6px;font:inherit}
button{padding:6px 12px;border:0;border-radius:6px;background:#1f6feb;color:#fff;font:inherit}
@media (max-width:600px){main{padding:8px}.card{padding:10px}td,th{padding:6px 4px}
.hide-narrow{display:none}td.n{white-space:normal}.big{font-size:22px}}
"""


@dataclass
class Alert:
    account: str
    rule: str
    severity: str
    status: Status
    since: datetime | None
    summary: str


@dataclass
class Glance:
    account: str
    provider: str
    state: str  # ok | amber | red
    why: str
    balance: Money | None
    runway: timedelta | None
    today: Money | None
    usual: Money | None
    quota: QuotaPeriod | None
    alerts: list[Alert]
    reads_ledger: bool
    currency: str


async def _glance(w: Watcher, now: datetime) -> Glance:
    """One account's answer: red while a critical alert fires or checks fail, amber
    while a warning fires or an alert is pending, green otherwise."""
    store, account = w.store, w.account
    balance = await store.last_balance(account)
    states = await store.alert_states(account)
    severity = {rule.name: rule.severity for rule in w.rules.rules}
    alerts = [
        Alert(account, name, severity.get(name, "critical"), st.status, st.active_since,
              w.health.summaries.get(name, ""))
        for name, st in sorted(states.items())
        if st.status in (Status.FIRING, Status.PENDING)
    ]  # fmt: skip
    firing = [a for a in alerts if a.status is Status.FIRING]
    if w.health.last_error:
        state, why = "red", "checks failing"
    elif any(a.severity == "critical" for a in firing):
        state, why = "red", f"{len(firing)} firing"
    elif firing:
        state, why = "amber", f"{len(firing)} firing"
    elif alerts:
        state, why = "amber", f"{len(alerts)} pending"
    else:
        state, why = "ok", "ok"
    plugin = REGISTRY[w.provider]
    reads_ledger = any(isinstance(r, LEDGER_KINDS) for r in w.active_rules)
    currency = (
        balance.currency if balance and balance.is_money else await store.spend_currency(account)
    )
    today = usual = None
    runway = None
    if plugin.has_money and reads_ledger:
        days = await store.spend_by_day(account, now - timedelta(days=DAYS - 1), currency)
        key = now.strftime("%Y-%m-%d")
        today = days.get(key, Money(0, currency))
        before = sorted(m.cents for d, m in days.items() if d != key)
        if before:
            usual = Money(before[len(before) // 2], currency)
        if balance is not None and balance.is_money and balance.cents > 0:
            burned = await store.spend_total(account, now - timedelta(hours=24), balance.currency)
            if burned.cents > 0:
                runway = timedelta(seconds=balance.cents * 86_400 // burned.cents)
    return Glance(account, w.provider, state, why, balance, runway, today, usual,
                  w.health.quota, alerts, reads_ledger, currency)  # fmt: skip


def _glance_table(glances: list[Glance]) -> str:
    rows = []
    for g in glances:
        runway = f"about {format_duration(_rounded(g.runway))}" if g.runway else "-"
        today = str(g.today) if g.today is not None else "-"
        usual = f'<span class="muted"> (usually {escape(str(g.usual))})</span>' if g.usual else ""
        quota = _quota_text(g.quota)
        rows.append(
            f'<tr id="glance-{escape(g.account)}"><td><a href="#account-{escape(g.account)}">'
            f'{escape(g.account)}</a><br><span class="muted">{escape(g.provider)}</span></td>'
            f'<td><span class="pill {g.state}">{escape(g.why)}</span></td>'
            f'<td class="n">{escape(str(g.balance)) if g.balance else "-"}</td>'
            f'<td class="n">{escape(runway)}</td>'
            f'<td class="n hide-narrow">{escape(today)}{usual}</td>'
            f'<td class="n hide-narrow">{escape(quota)}</td></tr>'
        )
    return (
        '<div class="scroll"><table id="accounts"><tr><th>Account</th><th>State</th>'
        '<th>Balance</th><th>Runway</th><th class="hide-narrow">Spend today</th>'
        '<th class="hide-narrow">Quota</th>'
        f"</tr>{''.join(rows)}</table></div>"
    )


def _quota_text(quota: QuotaPeriod | None) -> str:
    if quota is None:
        return "-"
    if quota.plan_limit is None:
        return f"{quota.used:,} (unlimited)"
    return (
        f"{quota.used:,} / {quota.plan_limit:,} ({quota.used * 100 // max(quota.plan_limit, 1)}%)"
    )


def _alerts_table(alerts: list[Alert]) -> str:
    if not alerts:
        return '<p id="firing">Nothing is firing or pending.</p>'
    order = {"critical": 0, "warning": 1, "info": 2}
    alerts = sorted(alerts, key=lambda a: (a.status is not Status.FIRING, order.get(a.severity, 3)))
    rows = "".join(
        f'<tr><td><span class="pill {a.severity if a.status is Status.FIRING else "pending"}">'
        f"{escape(a.severity if a.status is Status.FIRING else 'pending')}</span></td>"
        f'<td>{escape(a.account)} / {escape(a.rule)}<br><span class="muted">'
        f'{escape(a.summary)}</span></td><td class="n">{_when(a.since)}</td></tr>'
        for a in alerts
    )
    return (
        '<div class="scroll"><table id="firing"><tr><th>Severity</th><th>Alert</th>'
        f"<th>Since</th></tr>{rows}</table></div>"
    )


async def _account_section(watcher: Watcher, now: datetime, glance: Glance) -> str:
    store, account, health = watcher.store, watcher.account, watcher.health
    since = now - timedelta(days=DAYS)
    days = [(now - timedelta(days=n)).strftime("%Y-%m-%d") for n in range(DAYS - 1, -1, -1)]
    plugin = REGISTRY[watcher.provider]
    charts = ""
    balance = glance.balance
    if plugin.balance_unit is not None:
        history = await store.balance_history(account, since)
        charts += f"""<p>Balance <span class="big" id="balance-{escape(account)}">{escape(str(balance)) if balance else "unknown"}</span></p>
<h3>Balance, last {DAYS} days</h3>
{_balance_chart(account, history, since, now, rebuilt=plugin.wallet_effect is not None)}"""
    if plugin.has_money:
        spend = await store.spend_by_day(account, now - timedelta(days=DAYS - 1), glance.currency)
        charts += f"""<h3>Spend per day (UTC)</h3>
{_spend_chart(account, days, spend, glance.currency, reads_ledger=glance.reads_ledger)}"""
    if health.learning:
        rules = ", ".join(sorted(health.learning))
        charts += (
            f'<p class="muted" id="learning-{escape(account)}">Learning (too little history '
            f"to judge yet): {escape(rules)}.</p>"
        )
    if glance.quota is not None:
        charts += f'<h3>Quota this period</h3><p id="quota-{escape(account)}">{escape(_quota_text(glance.quota))}</p>'
    last_error = (
        f'<span class="bad" id="last-error-{escape(account)}">Last error: '
        f"{escape(health.last_error)}</span>"
        if health.last_error
        else ""
    )
    return f"""<section class="card" id="account-{escape(account)}">
<h2>{escape(account)} <span class="muted">({escape(watcher.provider)})</span>
<span class="pill {glance.state}">{escape(glance.why)}</span></h2>
<p class="muted">Last check {_when(health.last_check)};
last successful check {_when(health.last_success)}. {last_error}</p>
{charts}
</section>"""


def _balance_chart(
    account: str,
    history: list[tuple[datetime, Money]],
    since: datetime,
    now: datetime,
    *,
    rebuilt: bool = False,
) -> str:
    if len(history) < 2:
        first = f" ({escape(str(history[0][1]))} at {_when(history[0][0])})" if history else ""
        later = (
            "the last days are being rebuilt from the ledger"
            if rebuilt
            else "the chart fills in as checks run"
        )
        return (
            f'<p class="muted" id="balance-chart-{escape(account)}">One reading so far{first}: '
            f"{later}.</p>"
        )
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
    return f"""<svg id="balance-chart-{escape(account)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img"
 aria-label="Balance over the last {DAYS} days" data-points="{len(history)}">
<line x1="{PAD}" y1="{y(0):.1f}" x2="{WIDTH - PAD}" y2="{y(0):.1f}" stroke="#ccc"/>
<polyline id="balance-line-{escape(account)}" fill="none" stroke="#1565c0" stroke-width="2" points="{points}"/>
<text x="2" y="{y(high) + 4:.1f}">{escape(str(Money(high, currency)))}</text>
<text x="2" y="{y(low) + 4:.1f}">{escape(str(Money(low, currency)))}</text>
<text x="{PAD}" y="{HEIGHT - 8}">{since:%b %d}</text>
<text x="{WIDTH - PAD - 40}" y="{HEIGHT - 8}">{now:%b %d}</text>
</svg>"""


def _spend_chart(
    account: str, days: list[str], spend: dict[str, Money], currency: str, *, reads_ledger: bool
) -> str:
    if not spend:
        why = (
            f"No spend in the last {DAYS} days."
            if reads_ledger
            else "Spend is read from the ledger only when a spend rule needs it: add one "
            "(spend_above, usage_item, runway_below) to see it here."
        )
        return f'<p class="muted" id="spend-chart-{escape(account)}">{why}</p>'
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
        f'<svg id="spend-chart-{escape(account)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="Spend per day">{"".join(bars)}</svg>'
    )


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


def _notifications_table(notes: list[OutboxRow], search: str | None = None) -> str:
    if not notes:
        text = f"Nothing matches “{escape(search)}”." if search else "No notifications yet."
        return f'<p id="notifications">{text}</p>'
    rows = []
    for note in notes:
        if note.delivered_at:
            state = f"sent {_when(note.delivered_at)}"
        elif note.expired_at:
            state = '<span class="bad">expired</span>'
        else:
            error = f": {escape(note.last_error)}" if note.last_error else ""
            state = f'<span class="bad">retrying{error}</span>'
        rows.append(
            f'<tr><td class="n">{_when(note.created_at)}</td><td>{escape(note.channel)}</td>'
            f"<td>{escape(note.message.title)}</td><td>{state}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="notifications"><tr><th>Written</th><th>Channel</th>'
        f"<th>Notification</th><th>State</th></tr>{''.join(rows)}</table></div>"
    )


def _rounded(delta: timedelta) -> timedelta:
    """To the hour beyond a day, to the minute below."""
    step = 3600 if delta >= timedelta(days=1) else 60
    return timedelta(seconds=int(delta.total_seconds()) // step * step)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
