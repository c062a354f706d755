"""The stages that send news rather than conditions: one grouped message per item rule
for the new ledger items it matched, and the digests whose time has come."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from dialwatch.alerting.decide import AlertSpec, rule_spec
from dialwatch.alerting.lifecycle import AlertState, Decision
from dialwatch.alerting.routing import Target
from dialwatch.alerting.silences import Silence, silenced_by
from dialwatch.delivery.digest import DigestFacts, compose_digest, due_at, period
from dialwatch.delivery.render import Outcome, render_event
from dialwatch.rules.evaluate import Finding, describe_item, item_rule_summary
from dialwatch.rules.schema import LedgerEvent, Rule, RulesFile, UsageItem
from dialwatch.store import Store
from dialwatch.units import Money

ITEMS_SHOWN = 10


async def item_events(
    store: Store,
    rules: RulesFile,
    active: tuple[Rule, ...],
    account: str,
    provider: str,
    silences: Sequence[Silence],
    waiting: Collection[str],
) -> list[Outcome]:
    """One grouped message per item rule for the new items it matched (none if silenced:
    the items are then let go, not saved up for later). Only the rules in `waiting`
    can have any (those the check began with, and those it matched)."""
    outcomes = []
    for rule in active:
        if not isinstance(rule, UsageItem | LedgerEvent) or rule.name not in waiting:
            continue
        matches = await store.item_matches(account, rule.name, ITEMS_SHOWN)
        if not matches.count:
            continue
        spec = rule_spec(rules, rule, account, provider)
        summary = item_rule_summary(rule, matches.count, matches.total, matches.shown[0])
        lines = [describe_item(item) for item in matches.shown]
        outcomes.append(
            render_event(
                account,
                provider,
                spec,
                summary,
                lines,
                matches.count - len(matches.shown),
                silenced_by(silences, rule.name, account),
                count=matches.count,
                total=str(matches.total),
                items=lines,
            )
        )
    return outcomes


async def digests_due(
    store: Store,
    rules: RulesFile,
    account: str,
    has_money: bool,
    now: datetime,
    reads_ledger: bool,
    balance: Money | None,
) -> tuple[list[Outcome], list[tuple[str, datetime]]]:
    """Digests whose time has come, and when each was due. The first time a digest is
    seen it is only scheduled: starting the service sends no summary of the past."""
    outcomes: list[Outcome] = []
    due: list[tuple[str, datetime]] = []
    if not has_money:
        return outcomes, due  # nothing a digest would say (a quota-only provider)
    for digest in rules.digest:
        until = due_at(digest, now)
        key = f"{account}/{digest.name}"
        sent_for = await store.digest_sent_for(key)
        if sent_for is not None and sent_for >= until:
            continue
        due.append((key, until))
        if sent_for is None:
            continue
        since = until - period(digest)
        currency = await store.spend_currency(account)
        spend = await store.spend(account, since, currency, until=until) if reads_ledger else None
        facts = DigestFacts(
            account=account,
            balance=balance or await store.balance_at(account, until),
            balance_before=await store.balance_at(account, since),
            spend_by_day=await store.spend_by_day(account, since, currency) if reads_ledger else {},
            top_numbers=spend.by_number if spend else (),
            top_items=spend.by_fare if spend else (),
            alerts=await store.fired_between(account, since, until),
            spend_total=spend.total if spend else None,
        )
        message = compose_digest(digest, facts, since, until)
        spec = AlertSpec(
            name=f"digest:{digest.name}",
            kind="digest",
            severity="info",
            targets=tuple(Target(channel) for channel in digest.notify),
            hold=timedelta(0),
            repeat_every=None,
            send_resolved=False,
        )
        finding = Finding(True, message.title)
        outcomes.append(Outcome(spec, finding, AlertState(), Decision.EVENT, message=message))
    return outcomes, due
