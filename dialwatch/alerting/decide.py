"""Deciding what to say about each alert this check: silences, inhibition, and the
lifecycle step, as Alertmanager's dedup stage does. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from dialwatch.alerting.lifecycle import AlertState, Decision, Status, Timing, step
from dialwatch.alerting.routing import Target, targets_for
from dialwatch.alerting.silences import Silence, silenced_by
from dialwatch.rules.evaluate import Finding
from dialwatch.rules.schema import Inhibit, Rule, RulesFile


@dataclass(frozen=True)
class AlertSpec:
    """What the pipeline needs to know about one rule (user-written or dialwatch's own)."""

    name: str
    kind: str
    severity: str
    targets: tuple[Target, ...]
    hold: timedelta
    repeat_every: timedelta | None
    send_resolved: bool
    max_repeats: int | None = None
    title_template: str | None = None
    body_template: str | None = None

    @property
    def notify(self) -> tuple[str, ...]:
        return tuple(target.channel for target in self.targets)

    @property
    def timing(self) -> Timing:
        return Timing(self.hold, self.repeat_every, self.send_resolved, self.max_repeats)


def rule_spec(rules: RulesFile, rule: Rule, account: str, provider: str) -> AlertSpec:
    """A user's rule, routed."""
    return AlertSpec(
        name=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        targets=targets_for(rules, rule.name, rule.kind, rule.severity, account, provider, rule),
        hold=rule.for_,
        repeat_every=rule.repeat_every,
        send_resolved=rule.send_resolved,
        max_repeats=rule.max_repeats,
        title_template=rule.title,
        body_template=rule.body,
    )


def watcher_spec(rules: RulesFile, name: str, kind: str, account: str, provider: str) -> AlertSpec:
    """One of dialwatch's own alerts: routed like any other, else to the default channels,
    else to all."""
    return AlertSpec(
        name=name,
        kind=kind,
        severity="critical",
        targets=targets_for(rules, name, kind, "critical", account, provider),
        hold=timedelta(0),
        repeat_every=rules.defaults.repeat_every,
        send_resolved=True,
    )


@dataclass(frozen=True)
class Decided:
    """An alert after this check: its new state and why it notifies (or NONE)."""

    spec: AlertSpec
    finding: Finding
    state: AlertState
    decision: Decision
    shown: AlertState = field(
        default_factory=AlertState
    )  # the state a message describes (before a RESOLVED)
    silenced_by: int | None = None  # the silence that kept it quiet
    inhibited_by: str | None = None  # the firing alert that kept it quiet


def decide_all(
    evaluations: Sequence[tuple[AlertSpec, Finding]],
    states: Mapping[str, AlertState],
    silences: Sequence[Silence],
    inhibits: Sequence[Inhibit],
    account: str,
    now: datetime,
) -> list[Decided]:
    """Step every alert, muted where a silence matches it, then again, muted, where a
    firing alert inhibits it."""
    decided = []
    for spec, finding in evaluations:
        silence = silenced_by(silences, spec.name, account)
        outcome = decide(spec, finding, states, now, muted=silence is not None)
        decided.append(outcome if silence is None else replace(outcome, silenced_by=silence))
    return _inhibit(inhibits, decided, states, now)


def decide(
    spec: AlertSpec,
    finding: Finding,
    states: Mapping[str, AlertState],
    now: datetime,
    *,
    muted: bool,
) -> Decided:
    previous = states.get(spec.name, AlertState())
    state, decision = step(previous, finding.active, now, spec.timing, muted=muted)
    shown = previous if decision is Decision.RESOLVED else state
    return Decided(spec, finding, state, decision, shown)


def _inhibit(
    inhibits: Sequence[Inhibit],
    outcomes: list[Decided],
    states: Mapping[str, AlertState],
    now: datetime,
) -> list[Decided]:
    """Decide again, muted, the alerts that a firing `inhibit` source holds back."""
    firing = [o.spec for o in outcomes if o.state.status is Status.FIRING]
    result = []
    for outcome in outcomes:
        spec = outcome.spec
        source = next(
            (
                src.name
                for inhibit in inhibits
                if inhibit.target.matches(spec.name, spec.kind, spec.severity)
                for src in firing
                if src.name != spec.name
                and inhibit.source.matches(src.name, src.kind, src.severity)
            ),
            None,
        )
        if source is None or outcome.silenced_by is not None:
            result.append(outcome)
            continue
        muted = decide(spec, outcome.finding, states, now, muted=True)
        result.append(replace(muted, inhibited_by=source))
    return result
