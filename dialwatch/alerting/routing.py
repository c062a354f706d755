"""Where an alert goes: the channels a rule or route names, with the quiet hours that
hold it back on each. Pure."""

from __future__ import annotations

from typing import NamedTuple

from dialwatch.rules.schema import Route, RulesFile, _RuleBase
from dialwatch.rules.time_intervals import TimeInterval


class Target(NamedTuple):
    """One channel an alert goes to, and the quiet hours that hold it back there."""

    channel: str
    quiet: tuple[TimeInterval, ...] = ()


def targets_for(
    rules: RulesFile,
    rule: str,
    kind: str,
    severity: str,
    account: str,
    provider: str,
    own: _RuleBase | None = None,
) -> tuple[Target, ...]:
    """Where an alert goes: the rule's own `notify`; else the matching routes; else
    defaults.notify; else (for dialwatch's own alerts) every channel. Each target
    carries the quiet hours of the rule and of the route that chose it."""
    own_quiet = _quiet(rules, own, severity) if own else ()
    if own and own.notify:
        return tuple(Target(channel, own_quiet) for channel in own.notify)
    chosen: dict[str, tuple[TimeInterval, ...]] = {}
    for route in rules.routes:
        if route.match.matches(rule, kind, severity, account, provider):
            for channel in route.notify:
                chosen.setdefault(channel, own_quiet + _quiet(rules, route, severity))
            if not route.continue_:
                break
    if chosen:
        return tuple(Target(channel, quiet) for channel, quiet in chosen.items())
    fallback = rules.defaults.notify or tuple(rules.channels)
    return tuple(Target(channel, own_quiet) for channel in fallback)


def _quiet(rules: RulesFile, source: _RuleBase | Route, severity: str) -> tuple[TimeInterval, ...]:
    if severity == "critical" and not source.mute_critical:
        return ()  # critical breaks through quiet hours
    return tuple(i for name in source.mute_during for i in rules.time_intervals[name])
