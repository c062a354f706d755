"""How well `spend_anomaly` finds incidents, against the best flat `spend_above` limit.

A generator makes labelled 8-week ledgers of a busy telephony account: a weekday and
weekend rhythm with business hours, noise, slow growth, a holiday, and incidents of four
shapes injected into the last four weeks (the first four are the baseline):

Incidents fall on different weekdays in waking hours (a night's spend is below
`min_impact`, by design quiet), one of each shape a week:

- spike: 3x the hour's usual spend for 30 minutes;
- ramp: spend growing to 2x over a day;
- fraud: calls to new premium destinations for 2 hours, adding 3x the hour's usual;
- drop: spend stopping for 2 hours in business hours.

Each ledger is replayed through the backtest engine (the service's own predicates and
lifecycle, a check every 5 minutes) with two rules, `spend_anomaly` up and down (1 h
window, medium sensitivity). Per incident shape it prints recall (incidents that an
episode starting between the incident's start and an hour after its end detects),
precision (episodes that overlap an incident), and the median and worst delay from the
incident's start to the episode's. The flat limit is the lowest `spend_above` 1 h limit
with no more false alerts than the anomaly rules had, on the same rolling spend.

It also measures a live check's resident memory with 1 and 8 weeks of that history
stored (a first start reading the whole baseline, then a routine check).

Run: python benchmarks/anomaly.py [SEEDS]   (default: 5 ledgers)
"""

from __future__ import annotations

import asyncio
import random
import resource
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialwatch.backtest.engine import backtest_account
from dialwatch.backtest.replay import steps
from dialwatch.model import ActivityStats, BillingSnapshot, LedgerItem, time_key
from dialwatch.rules.loading import parse_rules
from dialwatch.units import Money

END = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
WEEKS = 8
CHECK = timedelta(minutes=5)
SHAPES = ("spike", "ramp", "fraud", "drop")
RULES = """
channels: {log: "json://127.0.0.1:9/unused"}
defaults: {notify: [log]}
rules:
  - {name: up, kind: spend_anomaly, window: 1h, min_impact: "$2.00"}
  - {name: down, kind: spend_anomaly, window: 1h, direction: down, min_impact: "$2.00"}
"""


@dataclass
class Incident:
    shape: str
    start: datetime
    end: datetime


def usual_per_hour(at: datetime, growth: float, holiday: bool) -> float:
    """The account's rhythm in cents per hour: business hours on weekdays, evenings,
    nights and weekends, growing slowly week by week."""
    weekday = at.weekday() < 5 and not holiday
    if weekday and 9 <= at.hour < 18:
        base = 3_000.0
    elif weekday and 7 <= at.hour < 22:
        base = 800.0
    else:
        base = 150.0
    return base * growth


def generate(seed: int) -> tuple[list[LedgerItem], list[Incident], date]:
    """Newest-first items for WEEKS weeks up to END, the incidents in them, and the
    holiday (a weekday that spends like a Sunday)."""
    rng = random.Random(seed)
    start = END - timedelta(weeks=WEEKS)
    holiday = (start + timedelta(weeks=6)).date() + timedelta(days=rng.randrange(5))
    incidents: list[Incident] = []
    for week in range(WEEKS // 2, WEEKS):
        # One incident a day, on different weekdays (not the holiday), never overlapping;
        # the day-long ramp last. In waking hours: a night's spend is below min_impact,
        # by design quiet.
        free = [d for d in range(5) if (start + timedelta(weeks=week, days=d)).date() != holiday]
        days = sorted(rng.sample(free, len(SHAPES)))
        for shape, day in zip(("drop", "spike", "fraud", "ramp"), days, strict=True):
            hour = rng.randrange(10, 17) if shape == "drop" else rng.randrange(8, 21)
            at = start + timedelta(weeks=week, days=day, hours=hour, minutes=rng.randrange(60))
            length = {"spike": timedelta(minutes=30), "ramp": timedelta(days=1),
                      "fraud": timedelta(hours=2), "drop": timedelta(hours=2)}[shape]  # fmt: skip
            incidents.append(Incident(shape, at, at + length))
    items: list[LedgerItem] = []
    minute = start
    serial = 0
    while minute < END:
        growth = 1 + 0.01 * ((minute - start) // timedelta(weeks=1))
        base = usual_per_hour(minute, growth, minute.date() == holiday) / 60
        extra, fraud, stopped = 0.0, 0.0, False
        for incident in incidents:
            if not incident.start <= minute < incident.end:
                continue
            progress = (minute - incident.start) / (incident.end - incident.start)
            if incident.shape == "spike":
                extra += 2 * base
            elif incident.shape == "ramp":
                extra += base * progress
            elif incident.shape == "fraud":
                fraud += 3 * max(base, 3_000 / 60)
            else:
                stopped = True
        cents = 0 if stopped else max(0, round(rng.gauss(base + extra, 0.3 * base)))
        if cents:
            serial += 1
            items.append(_item(minute, cents, "voice.outbound.minute", "+14155550123", serial))
        if fraud:
            serial += 1
            items.append(_item(minute, round(fraud), "voice.premium", "+88235123", serial))
        minute += timedelta(minutes=1)
    items.reverse()
    return items, incidents, holiday


def _item(at: datetime, cents: int, fare: str, number: str, serial: int) -> LedgerItem:
    return LedgerItem(f"{time_key(at)}-{serial}", "usage", at, cents, "USD", fare, number, "wallet")


@dataclass
class Generated:
    """A Provider over a generated ledger (the backtest engine reads it as an API)."""

    items: list[LedgerItem]
    account: str = "busy"
    provider: str = "dial"

    async def fetch_billing(self, now: datetime) -> BillingSnapshot:
        return BillingSnapshot(self.account, now, Money(10**9))

    async def read_activity(
        self, floor: datetime, stats: ActivityStats, reach: datetime | None = None
    ) -> AsyncIterator[list[LedgerItem]]:
        for i in range(0, len(self.items), 100):
            stats.requests += 1
            page = [item for item in self.items[i : i + 100] if item.occurred_at >= floor]
            yield page
            if len(page) < 100:
                return


def score(
    episodes: list[tuple[datetime, datetime]], incidents: list[Incident]
) -> tuple[list[Incident], list[float], int]:
    """The incidents detected (an episode starts between an incident's start and an
    hour after its end), their delays in minutes, and the false episodes (those that
    start anywhere else)."""
    detected, delays = [], []
    for incident in incidents:
        starts = [
            s for s, _ in episodes if incident.start <= s <= incident.end + timedelta(hours=1)
        ]
        if starts:
            detected.append(incident)
            delays.append((min(starts) - incident.start) / timedelta(minutes=1))
    false = sum(
        1 for s, _ in episodes
        if not any(i.start <= s <= i.end + timedelta(hours=1) for i in incidents)
    )  # fmt: skip
    return detected, delays, false


def flat_episodes(
    rolling: list[int], checks: list[datetime], limit: int
) -> list[tuple[datetime, datetime]]:
    episodes, start = [], None
    for at, spent in zip(checks, rolling, strict=True):
        if spent > limit and start is None:
            start = at
        elif spent <= limit and start is not None:
            episodes.append((start, at))
            start = None
    if start is not None:
        episodes.append((start, checks[-1]))
    return episodes


async def one(seed: int) -> dict[str, dict[str, list[float]]]:
    items, incidents, holiday = generate(seed)
    rules = parse_rules(RULES, "bench.yaml", {})
    since = END - timedelta(weeks=WEEKS // 2)
    checks = steps(since, END, CHECK)
    result = await backtest_account(
        rules,
        Generated(items),
        since,
        END,
        checks,
        END,
        suggest=True,  # type: ignore[arg-type]
    )
    out: dict[str, dict[str, list[float]]] = {}
    episodes = {
        name: [(e.start, e.end or END) for e in r.episodes]
        for name, r in result.replay.results.items()
    }
    up = [i for i in incidents if i.shape != "drop"]
    down = [i for i in incidents if i.shape == "drop"]
    found_up, delays_up, false_up = score(episodes["up"], up)
    found_down, delays_down, false_down = score(episodes["down"], down)
    on_holiday = sum(
        1 for s, _ in episodes["down"] if s.date() == holiday and not any(
            i.start <= s <= i.end + timedelta(hours=1) for i in down)
    )  # fmt: skip
    false_total = false_up + false_down
    rolling = result.history.rolling[timedelta(hours=1)]
    # The flat limit that finds the most incidents with no more false alerts than ours.
    best = (-1, max(rolling))
    for candidate in range(max(rolling), 0, -100):
        found, _, false = score(flat_episodes(rolling, checks, candidate), up)
        if false <= false_total and len(found) > best[0]:
            best = (len(found), candidate)
    limit = best[1]
    flat = flat_episodes(rolling, checks, limit)
    found_flat, delays_flat, false_flat = score(flat, up)
    for shape in SHAPES:
        ours = (found_down, delays_down) if shape == "drop" else (found_up, delays_up)
        mine = [d for i, d in zip(ours[0], ours[1], strict=True) if i.shape == shape]
        theirs = [d for i, d in zip(found_flat, delays_flat, strict=True) if i.shape == shape]
        total = sum(1 for i in incidents if i.shape == shape)
        out[shape] = {
            "recall": [len(mine) / total],
            "delays": mine,
            "flat_recall": [len(theirs) / total if shape != "drop" else 0.0],
            "flat_delays": theirs,
        }
    episodes_all = len(episodes["up"]) + len(episodes["down"])
    out["_"] = {
        "precision": [(episodes_all - false_total) / episodes_all if episodes_all else 1.0],
        "flat_precision": [(len(flat) - false_flat) / len(flat) if flat else 1.0],
        "false": [false_total],
        "holiday": [on_holiday],
        "flat_limit": [limit],
    }
    return out


def _rss_child(weeks: int) -> None:
    """One fresh process: a first check reading `weeks` weeks into SQLite, then a
    routine check; prints the peak RSS in MB."""
    import tempfile

    from dialwatch.pipeline.cycle import Watcher, run_cycle
    from dialwatch.store import open_store

    class Clock:
        current = END

        def now(self) -> datetime:
            return self.current

    async def main() -> None:
        items, _, _ = generate(1)
        cutoff = END - timedelta(weeks=weeks)
        source = Generated([i for i in items if i.occurred_at >= cutoff])
        rules = parse_rules(RULES.replace("window: 1h}", f"window: 1h, baseline: {weeks}w}}"),
                            "bench.yaml", {})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            store = await open_store(str(Path(tmp) / "state.db"))
            clock = Clock()
            watcher = Watcher(rules, source, store, None, clock)  # type: ignore[arg-type]
            await run_cycle(watcher)
            clock.current += timedelta(minutes=5)
            await run_cycle(watcher)
            await store.close()
        print(f"RSS={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}")

    asyncio.run(main())


def main(seeds: int) -> None:
    results = [asyncio.run(one(seed)) for seed in range(seeds)]
    print(f"{seeds} labelled 8-week ledgers, a check every {int(CHECK.total_seconds() // 60)} min; "
          "incidents in the last 4 weeks\n")  # fmt: skip
    print(f"{'incident':<8} {'recall':>7} {'median delay':>13} {'worst delay':>12}   "
          f"{'flat recall':>11} {'flat median':>12} {'flat worst':>11}")  # fmt: skip
    for shape in SHAPES:
        recall = statistics.mean(r for res in results for r in res[shape]["recall"])
        delays = [d for res in results for d in res[shape]["delays"]]
        flat_recall = statistics.mean(r for res in results for r in res[shape]["flat_recall"])
        flat_delays = [d for res in results for d in res[shape]["flat_delays"]]

        def minutes(values: list[float], pick: str) -> str:
            if not values:
                return "-"
            value = statistics.median(values) if pick == "median" else max(values)
            return f"{value:.0f} min"

        print(f"{shape:<8} {recall:>7.2f} {minutes(delays, 'median'):>13} "
              f"{minutes(delays, 'worst'):>12}   {flat_recall:>11.2f} "
              f"{minutes(flat_delays, 'median'):>12} {minutes(flat_delays, 'worst'):>11}")  # fmt: skip
    precision = statistics.mean(p for res in results for p in res["_"]["precision"])
    flat_precision = statistics.mean(p for res in results for p in res["_"]["flat_precision"])
    false = sum(f for res in results for f in res["_"]["false"])
    holiday = sum(f for res in results for f in res["_"]["holiday"])
    limits = [int(v) for res in results for v in res["_"]["flat_limit"]]
    print(f"\nprecision: spend_anomaly {precision:.2f}, flat limit {flat_precision:.2f} "
          f"(spend_anomaly: {false:.0f} false alerts, {holiday:.0f} of them the holiday's "
          "quiet business hours; the flat limit allowed as many: "
          f"${min(limits) / 100:.0f} to ${max(limits) / 100:.0f} an hour)")  # fmt: skip
    for weeks in (1, 8):
        out = subprocess.run(
            [sys.executable, __file__, "--rss", str(weeks)], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        rss = float(out.stdout.rsplit("RSS=", 1)[1])
        print(f"peak RSS, a live check over {weeks} week(s) of stored history: {rss:.1f} MB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        _rss_child(int(sys.argv[2]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
