"""The rules file: YAML with positions, ${VAR} substitution, strict validation.

Every problem is reported as a ConfigIssue pointing at file, line, column and key,
and all of them are collected before failing, so one `validate` run lists them all.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import apprise
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from dialwatch.errors import ConfigError, ConfigIssue
from dialwatch.quiet_hours import TimeInterval
from dialwatch.settings import check_base_url, check_interval
from dialwatch.templates import problem as template_problem
from dialwatch.units import CREDITS, Money, parse_duration, parse_money

Severity = Literal["info", "warning", "critical"]


def _repeat_every(value: object) -> timedelta | None:
    if isinstance(value, str) and value.strip().lower() == "never":
        return None
    delta = parse_duration(value)
    if delta < timedelta(seconds=1):
        raise ValueError('must be at least 1s; use "never" to notify only once')
    return delta


Duration = Annotated[timedelta, PlainValidator(parse_duration)]
RepeatEvery = Annotated[timedelta | None, PlainValidator(_repeat_every)]
MoneyAmount = Annotated[Money, PlainValidator(parse_money)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _RuleBase(_Strict):
    name: Name
    severity: Severity = "warning"
    title: str | None = None  # Jinja2 templates for this rule's messages
    body: str | None = None
    notify: tuple[Name, ...] = ()
    mute_during: tuple[Name, ...] = ()  # names in time_intervals
    mute_critical: bool = False  # critical alerts break through quiet hours unless True
    for_: Duration = Field(default=timedelta(0), alias="for")
    repeat_every: RepeatEvery = timedelta(hours=4)
    max_repeats: Annotated[int, Field(ge=0)] | None = None
    send_resolved: bool = True
    accounts: tuple[Name, ...] = ()  # default: every account whose provider supports the kind


class BalanceBelow(_RuleBase):
    """The balance is below `threshold` (money for Dial, credits for Mifumo)."""

    kind: Literal["balance_below"]
    threshold: MoneyAmount
    hysteresis: MoneyAmount | None = None

    @property
    def clear_margin(self) -> Money:
        """How far above the threshold the balance must climb to resolve."""
        if self.hysteresis is not None:
            return self.hysteresis
        return Money(max(100, abs(self.threshold.cents) * 5 // 100), self.threshold.currency)


class SubscriptionCancelling(_RuleBase):
    """The subscription is set to cancel at the end of its period."""

    kind: Literal["subscription_cancelling"]


class NumbersAtRisk(_RuleBase):
    """Dial has scheduled the account's numbers for release (PAYG, negative balance)."""

    kind: Literal["numbers_at_risk"]
    severity: Severity = "critical"


class PaymentMethodExpiring(_RuleBase):
    """The default card expires within `within`, or PAYG numbers have no payment method."""

    kind: Literal["payment_method_expiring"]
    within: Duration = timedelta(days=30)


class Match(_Strict):
    """Narrows which ledger items a rule counts; every given field must match."""

    fare: str | None = None  # glob on Dial's fareName, e.g. "sms.*"
    number: str | None = None
    attribution: Literal["wallet", "entitlement"] | None = None
    action: str | None = None  # glob on Cloudflare's action, e.g. "subscription"
    description: str | None = None  # glob, e.g. "*Workers*"
    zone: str | None = None  # Cloudflare zone name


def _timezone(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a timezone is an IANA name such as UTC or Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown timezone {value!r}; use an IANA name such as Europe/Berlin"
        ) from exc
    return value


Period = Literal["day", "week", "month"]


class SpendAbove(_RuleBase):
    """Usage spend in a rolling `window` or a calendar `period` is above `amount`."""

    kind: Literal["spend_above"]
    amount: MoneyAmount
    window: Duration | None = None
    period: Period | None = None
    timezone: Annotated[str, PlainValidator(_timezone)] = "UTC"
    match: Match = Match()

    @model_validator(mode="after")
    def _window_or_period(self) -> SpendAbove:
        if (self.window is None) == (self.period is None):
            raise ValueError("set exactly one of window (e.g. 24h) or period (day, week, month)")
        if self.window is not None and self.window <= timedelta(0):
            raise ValueError("window must be longer than 0s")
        return self


class UsageItem(_RuleBase):
    """A single new usage item costs at least `min_amount`."""

    kind: Literal["usage_item"]
    min_amount: MoneyAmount
    match: Match = Match()


class LedgerEvent(_RuleBase):
    """New ledger items of `types` arrived (by default every type but usage)."""

    kind: Literal["ledger_event"]
    types: tuple[Literal["credit", "payment", "purchase", "charge", "usage"], ...] = (
        "credit",
        "payment",
        "purchase",
        "charge",
    )
    severity: Severity = "info"
    match: Match = Match()


class RunwayBelow(_RuleBase):
    """At the burn rate of the trailing `lookback`, the wallet empties within `runway`."""

    kind: Literal["runway_below"]
    runway: Duration
    lookback: Duration = timedelta(hours=24)


class QuotaAbove(_RuleBase):
    """This month's usage reached `percent` of the plan limit, or (`overage: true`) went
    over it. An unlimited plan never fires."""

    kind: Literal["quota_above"]
    percent: Annotated[int, Field(ge=1, le=1000)] | None = None
    overage: bool = False

    @model_validator(mode="after")
    def _percent_or_overage(self) -> QuotaAbove:
        if (self.percent is None) == (not self.overage):
            raise ValueError("set exactly one of percent (e.g. 80) or overage: true")
        return self


Rule = Annotated[
    BalanceBelow
    | SubscriptionCancelling
    | NumbersAtRisk
    | PaymentMethodExpiring
    | SpendAbove
    | UsageItem
    | LedgerEvent
    | RunwayBelow
    | QuotaAbove,
    Field(discriminator="kind"),
]
RULE_KINDS: dict[str, type[_RuleBase]] = {
    "balance_below": BalanceBelow,
    "subscription_cancelling": SubscriptionCancelling,
    "numbers_at_risk": NumbersAtRisk,
    "payment_method_expiring": PaymentMethodExpiring,
    "spend_above": SpendAbove,
    "usage_item": UsageItem,
    "ledger_event": LedgerEvent,
    "runway_below": RunwayBelow,
    "quota_above": QuotaAbove,
}
_ANY_RULE: TypeAdapter[Rule] = TypeAdapter(Rule)
SnapshotRule = (
    BalanceBelow | SubscriptionCancelling | NumbersAtRisk | PaymentMethodExpiring | QuotaAbove
)
# dialwatch's own alerts, by name, with their kinds: they can be silenced and inhibit.
WATCHER_ALERTS = {"dialwatch-api-auth": "watcher_auth", "dialwatch-unhealthy": "watcher_unhealthy"}
# Rules fed by the activity ledger; without any, the ledger is not read at all.
LEDGER_KINDS = (SpendAbove, UsageItem, LedgerEvent, RunwayBelow)
# Rules that are events (one message per batch of new items), not conditions that hold.
ItemRule = UsageItem | LedgerEvent
# Keys a rule inherits from `defaults:` when it does not set them itself.
# `notify` is not among them: a rule without its own goes by `routes`, then defaults.notify.
INHERITED = ("repeat_every", "max_repeats", "send_resolved", "for")


@dataclass(frozen=True)
class ProviderSpec:
    """What dialwatch can watch at one provider."""

    base_url: str  # the documented one
    kinds: tuple[str, ...]  # the rule kinds it supports
    balance_unit: Literal["money", "credits"] | None = None

    @property
    def has_money(self) -> bool:
        """Whether it has a balance or spend to summarise (digests, status page)."""
        return self.balance_unit is not None or "spend_above" in self.kinds


_SPEND_KINDS = ("spend_above", "usage_item", "ledger_event")
_DIAL_KINDS = (
    "balance_below",
    "subscription_cancelling",
    "numbers_at_risk",
    "payment_method_expiring",
    *_SPEND_KINDS,
    "runway_below",
)
PROVIDERS = {
    "dial": ProviderSpec("https://getdial.ai", _DIAL_KINDS, "money"),
    "mifumo": ProviderSpec(
        "https://mifumosms.mifumolabs.com", ("balance_below", *_SPEND_KINDS), "credits"
    ),
    "hookbridge": ProviderSpec("https://api.hookbridge.io", ("quota_above",)),
    "cloudflare": ProviderSpec("https://api.cloudflare.com/client/v4", _SPEND_KINDS),
}
ProviderName = Literal["dial", "mifumo", "hookbridge", "cloudflare"]
# Without an `accounts` section: the one Dial account, read with DIALWATCH_API_KEY.
DEFAULT_ACCOUNT = "dial"


def unsupported(rule: Rule, provider: str) -> str | None:
    """Why `rule` cannot run on an account of `provider`, or None if it can."""
    spec = PROVIDERS[provider]
    if rule.kind not in spec.kinds:
        return f"{provider} supports {', '.join(spec.kinds)}"
    if isinstance(rule, BalanceBelow):
        unit = "credits" if rule.threshold.currency == CREDITS else "money"
        if unit != spec.balance_unit:
            example = "500 credits" if spec.balance_unit == "credits" else "$50.00"
            return (
                f"{provider} balances are {spec.balance_unit}: write a threshold like {example!r}"
            )
    return None


def _base_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an https:// URL")
    return check_base_url(value)


class Account(_Strict):
    """One account to watch, at one provider, with its key (a SecretStr)."""

    name: Name
    provider: ProviderName
    api_key: SecretStr
    api_email: str | None = None  # Cloudflare global API key: the account's email
    base_url: Annotated[str, PlainValidator(_base_url)] | None = None
    interval: Annotated[timedelta, PlainValidator(check_interval)] | None = (
        None  # default: DIALWATCH_INTERVAL
    )

    @property
    def url(self) -> str:
        return self.base_url or PROVIDERS[self.provider].base_url


class Defaults(_Strict):
    notify: tuple[Name, ...] = ()
    repeat_every: RepeatEvery = timedelta(hours=4)
    max_repeats: Annotated[int, Field(ge=0)] | None = None
    send_resolved: bool = True
    for_: Duration = Field(default=timedelta(0), alias="for")
    # Not inherited by rules: how long checks may fail before dialwatch alerts about itself,
    # and how long a channel's message waits to gather more alerts.
    unhealthy_after: Duration = timedelta(minutes=10)
    group_wait: Duration = timedelta(0)


def _one_or_many(value: object) -> object:
    return (value,) if isinstance(value, str) else value


Names = Annotated[tuple[str, ...], BeforeValidator(_one_or_many)]


class AlertMatcher(_Strict):
    """Selects alerts: every field given must match; a list matches any of its values."""

    rule: Names = ()
    kind: Names = ()
    severity: Annotated[tuple[Severity, ...], BeforeValidator(_one_or_many)] = ()
    account: Names = ()
    provider: Names = ()

    def matches(
        self, rule: str, kind: str, severity: str, account: str = "", provider: str = ""
    ) -> bool:
        return all(
            not wanted or value in wanted
            for wanted, value in (
                (self.rule, rule),
                (self.kind, kind),
                (self.severity, severity),
                (self.account, account),
                (self.provider, provider),
            )
        )


class Route(_Strict):
    """Sends matching alerts to `notify`; the first route that matches decides, unless it
    says `continue: true`, and then the next matching routes add their channels too."""

    match: AlertMatcher = AlertMatcher()
    notify: tuple[Name, ...]
    continue_: bool = Field(default=False, alias="continue")
    mute_during: tuple[Name, ...] = ()
    mute_critical: bool = False


class Target(NamedTuple):
    """One channel an alert goes to, and the quiet hours that hold it back there."""

    channel: str
    quiet: tuple[TimeInterval, ...] = ()


class Inhibit(_Strict):
    """While a `source` alert fires on an account, `target` alerts there stay quiet."""

    source: AlertMatcher
    target: AlertMatcher


def _time_of_day(value: object) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a time of day; write it like 08:00") from exc


def _weekday(value: object) -> int:
    names = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    if not isinstance(value, str) or value.lower() not in names:
        raise ValueError(f"{value!r} is not a weekday; use monday ... sunday")
    return names.index(value.lower())


class Digest(_Strict):
    """A daily or weekly summary per account, sent at `at` local time to `notify`."""

    name: Name
    every: Literal["day", "week"] = "day"
    at: Annotated[time, PlainValidator(_time_of_day)] = time(8, 0)
    weekday: Annotated[int, PlainValidator(_weekday)] = 0  # for every: week
    timezone: Annotated[str, PlainValidator(_timezone)] = "UTC"
    notify: tuple[Name, ...]


BodyFormat = Literal["markdown", "text", "html"]


class Channel(_Strict):
    """An apprise URL (a SecretStr: it embeds tokens), how bodies are written for it, and
    optional templates for every message it gets."""

    url: SecretStr
    format: BodyFormat | None = None  # default: text for email, markdown for the rest
    title: str | None = None
    body: str | None = None

    @property
    def body_format(self) -> BodyFormat:
        if self.format:
            return self.format
        scheme = self.url.get_secret_value().split("://", 1)[0].lower()
        return "text" if scheme in ("mailto", "mailtos") else "markdown"


def _channel(value: object) -> object:
    return {"url": value} if isinstance(value, str) else value


class RulesFile(_Strict):
    """A validated rules file."""

    channels: dict[Name, Annotated[Channel, BeforeValidator(_channel)]]
    accounts: tuple[Account, ...] = ()  # none: one Dial account from DIALWATCH_API_KEY
    defaults: Defaults = Defaults()
    rules: tuple[Rule, ...] = ()
    routes: tuple[Route, ...] = ()
    inhibit: tuple[Inhibit, ...] = ()
    time_intervals: dict[Name, tuple[TimeInterval, ...]] = {}
    digest: tuple[Digest, ...] = ()

    def targets_for(
        self, rule: str, kind: str, severity: str, account: str, provider: str,
        own: _RuleBase | None = None,
    ) -> tuple[Target, ...]:  # fmt: skip
        """Where an alert goes: the rule's own `notify`; else the matching routes; else
        defaults.notify; else (for dialwatch's own alerts) every channel. Each target
        carries the quiet hours of the rule and of the route that chose it."""
        own_quiet = self._quiet(own, severity) if own else ()
        if own and own.notify:
            return tuple(Target(channel, own_quiet) for channel in own.notify)
        chosen: dict[str, tuple[TimeInterval, ...]] = {}
        for route in self.routes:
            if route.match.matches(rule, kind, severity, account, provider):
                for channel in route.notify:
                    chosen.setdefault(channel, own_quiet + self._quiet(route, severity))
                if not route.continue_:
                    break
        if chosen:
            return tuple(Target(channel, quiet) for channel, quiet in chosen.items())
        fallback = self.defaults.notify or tuple(self.channels)
        return tuple(Target(channel, own_quiet) for channel in fallback)

    def account_providers(self) -> dict[str, str]:
        """Each account's name and provider (without an `accounts` section, the default)."""
        return {a.name: a.provider for a in self.accounts} or {DEFAULT_ACCOUNT: "dial"}

    def rules_for(self, account: str, provider: str) -> tuple[Rule, ...]:
        """The rules that run on `account`: those naming it, or naming no account, whose
        kind its provider supports."""
        return tuple(
            rule
            for rule in self.rules
            if (not rule.accounts or account in rule.accounts)
            and unsupported(rule, provider) is None
        )

    def _quiet(self, source: _RuleBase | Route, severity: str) -> tuple[TimeInterval, ...]:
        if severity == "critical" and not source.mute_critical:
            return ()  # critical breaks through quiet hours
        return tuple(i for name in source.mute_during for i in self.time_intervals[name])


@dataclass
class _Source:
    """A YAML document as plain data, with where each path came from."""

    data: Any
    marks: dict[tuple[Any, ...], tuple[int, int]]
    issues: list[ConfigIssue]


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_rules(path: Path | str, env: Mapping[str, str] | None = None) -> RulesFile:
    """Read and validate a rules file; raises ConfigError listing every problem."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{filename}: cannot read the rules file: {exc.strerror}") from exc
    return parse_rules(text, filename, os.environ if env is None else env)


def parse_rules(text: str, filename: str, env: Mapping[str, str]) -> RulesFile:
    source = _compose(text, filename, env)
    if source.issues and source.data is None:
        raise ConfigError(source.issues)
    if not isinstance(source.data, dict):
        raise ConfigError(
            [ConfigIssue(filename, 1, 1, "(file)", "expected a mapping with channels and rules")]
        )
    data = _apply_defaults(source.data)
    issues = source.issues + _cross_check(data, source, filename)
    try:
        rules_file = RulesFile.model_validate(data)
    except ValidationError as exc:
        issues += [_issue_from_pydantic(err, source, filename) for err in exc.errors()]
        rules_file = None
    if issues:
        raise ConfigError(sorted(set(issues), key=lambda i: (i.line, i.column, i.key)))
    assert rules_file is not None
    return rules_file


def _compose(text: str, filename: str, env: Mapping[str, str]) -> _Source:
    source = _Source(None, {}, [])
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        source.issues.append(ConfigIssue(filename, line, col, "(yaml)", str(exc.problem)))
        return source
    finally:
        loader.dispose()
    if node is None:
        return source

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> Any:
        source.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                key_path = (*path, key)
                if key in result:
                    source.issues.append(
                        _issue(filename, key_node, key_path, "duplicate key; each key once")
                    )
                source.marks[key_path] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                result[key] = walk(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(node.value)]
        value = loader.construct_object(node)
        if isinstance(value, str):
            value = _substitute(value, node, path, filename, env, source.issues)
        return value

    source.data = walk(node, ())
    return source


def _substitute(
    value: str,
    node: yaml.Node,
    path: tuple[Any, ...],
    filename: str,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in env:
            issues.append(
                _issue(filename, node, path, f"environment variable ${{{name}}} is not set; set it")
            )
            return ""
        return env[name]

    return _VAR.sub(replace, value)


def _issue(filename: str, node: yaml.Node, path: tuple[Any, ...], message: str) -> ConfigIssue:
    mark = node.start_mark
    return ConfigIssue(filename, mark.line + 1, mark.column + 1, _dotted(path), message)


def _apply_defaults(data: dict[Any, Any]) -> dict[Any, Any]:
    defaults = data.get("defaults")
    rules = data.get("rules")
    if not isinstance(defaults, dict) or not isinstance(rules, list):
        return data
    try:
        Defaults.model_validate(defaults)
    except ValidationError:
        return data  # reported once, at defaults, rather than again for every rule
    merged = [
        {**{k: defaults[k] for k in INHERITED if k in defaults}, **rule}
        if isinstance(rule, dict)
        else rule
        for rule in rules
    ]
    return {**data, "rules": merged}


def _issue_from_pydantic(err: Any, source: _Source, filename: str) -> ConfigIssue:
    loc = tuple(err["loc"])
    # A discriminated union puts the rule kind into the location: rules.0.balance_below.x
    if len(loc) >= 3 and loc[0] == "rules" and loc[2] in RULE_KINDS:
        kind_model: type[_RuleBase] | None = RULE_KINDS[loc[2]]
        loc = loc[:2] + loc[3:]
    else:
        kind_model = None
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "kind")
    line, col = _locate(source.marks, loc)
    return ConfigIssue(filename, line, col, _dotted(loc), _explain(err, loc, kind_model))


def _explain(err: Any, loc: tuple[Any, ...], kind_model: type[_RuleBase] | None) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1], kind_model)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown key; {hint}valid keys here: {', '.join(valid)}"
    if kind == "union_tag_invalid":
        return f"unknown rule kind; valid kinds: {', '.join(RULE_KINDS)}"
    if kind == "union_tag_not_found":
        return f"a rule needs a kind; valid kinds: {', '.join(RULE_KINDS)}"
    if kind == "missing":
        return "required key is missing"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")


def _valid_keys(parent: tuple[Any, ...], kind_model: type[_RuleBase] | None) -> list[str]:
    model: type[BaseModel] = RulesFile
    if parent[-1:] == ("match",):
        model = Match
    elif parent[:1] == ("accounts",) and len(parent) == 2:
        model = Account
    elif kind_model is not None:
        model = kind_model
    elif parent == ("defaults",):
        model = Defaults
    return [field.alias or name for name, field in model.model_fields.items()]


def _locate(marks: dict[tuple[Any, ...], tuple[int, int]], loc: tuple[Any, ...]) -> tuple[int, int]:
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return (1, 1)


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(file)"


def _cross_check(data: dict[Any, Any], source: _Source, filename: str) -> list[ConfigIssue]:
    """What the schema alone cannot see: names that must refer to something, or be unique.

    Works on the raw data, so these are reported alongside schema errors, not after.
    """
    issues: list[ConfigIssue] = []

    def add(loc: tuple[Any, ...], message: str) -> None:
        line, col = _locate(source.marks, loc)
        issues.append(ConfigIssue(filename, line, col, _dotted(loc), message))

    channels = data.get("channels")
    channels = channels if isinstance(channels, dict) else {}
    known = ", ".join(map(str, channels)) or "none defined"
    if not channels:
        add(("channels",), "define at least one channel (name: apprise URL)")
    for name, channel in channels.items():
        url = channel.get("url") if isinstance(channel, dict) else channel
        problem = channel_url_problem(url) if isinstance(url, str) else None
        if problem:
            add(("channels", name), problem)
        if isinstance(channel, dict):
            for key in ("title", "body"):
                if isinstance(channel.get(key), str):
                    issue = template_problem(channel[key], None)
                    if issue:
                        add(("channels", name, key), issue)

    def check_notify(loc: tuple[Any, ...], notify: object) -> None:
        for i, channel in enumerate(notify if isinstance(notify, list) else []):
            if isinstance(channel, str) and channel not in channels:
                add((*loc, i), f"no channel named '{channel}'; defined: {known}")

    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        check_notify(("defaults", "notify"), defaults.get("notify"))
    intervals = data.get("time_intervals")
    interval_names = list(intervals) if isinstance(intervals, dict) else []

    def check_mute(loc: tuple[Any, ...], names: object) -> None:
        for i, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in interval_names:
                defined = ", ".join(interval_names) or "none defined"
                add((*loc, i), f"no time interval named '{name}'; defined: {defined}")

    digests = data.get("digest")
    for index, digest in enumerate(digests if isinstance(digests, list) else []):
        if isinstance(digest, dict):
            check_notify(("digest", index, "notify"), digest.get("notify"))
    routes = data.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            check_notify(("routes", index, "notify"), route.get("notify"))
            check_mute(("routes", index, "mute_during"), route.get("mute_during"))
    has_fallback = bool(routes) or (isinstance(defaults, dict) and bool(defaults.get("notify")))
    accounts = _check_accounts(data.get("accounts"), add)
    rules = data.get("rules")
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        name = rule.get("name")
        if isinstance(name, str) and name in seen:
            add(
                ("rules", index, "name"),
                f"duplicate rule name '{name}' (first at rules[{seen[name]}]); "
                "names must be unique",
            )
        if isinstance(name, str):
            seen.setdefault(name, index)
        if not rule.get("notify") and not has_fallback:
            add(
                ("rules", index),
                "no channel to notify: set notify here, in defaults.notify, or add routes",
            )
        check_notify(("rules", index, "notify"), rule.get("notify"))
        check_mute(("rules", index, "mute_during"), rule.get("mute_during"))
        _check_rule_accounts(rule, index, accounts, add)
        for key in ("title", "body"):
            if isinstance(rule.get(key), str) and isinstance(rule.get("kind"), str):
                issue = template_problem(rule[key], rule["kind"])
                if issue:
                    add(("rules", index, key), issue)
    names = [*seen, *WATCHER_ALERTS]
    kinds = [*RULE_KINDS, *WATCHER_ALERTS.values()]
    inhibit = data.get("inhibit")
    for index, entry in enumerate(inhibit if isinstance(inhibit, list) else []):
        for side in ("source", "target"):
            matcher = entry.get(side) if isinstance(entry, dict) else None
            if not isinstance(matcher, dict):
                continue
            for key, valid in (("rule", names), ("kind", kinds)):
                given = matcher.get(key)
                for value in [given] if isinstance(given, str) else given or []:
                    if isinstance(value, str) and value not in valid:
                        add(
                            ("inhibit", index, side, key),
                            f"no {key} named '{value}'; known: {', '.join(valid)}",
                        )
    return issues


def _check_accounts(raw: object, add: Any) -> dict[str, str]:
    """Account names (unique) and their providers; without an `accounts` section, the
    one Dial account from the environment."""
    if not isinstance(raw, list):
        return {DEFAULT_ACCOUNT: "dial"}
    accounts: dict[str, str] = {}
    for index, account in enumerate(raw):
        if not isinstance(account, dict):
            continue
        name, provider = account.get("name"), account.get("provider")
        if isinstance(name, str) and name in accounts:
            add(("accounts", index, "name"), f"duplicate account name '{name}'")
        if isinstance(name, str) and isinstance(provider, str) and provider in PROVIDERS:
            accounts.setdefault(name, provider)
        if account.get("api_email") is not None and provider != "cloudflare":
            add(
                ("accounts", index, "api_email"),
                "api_email is for a Cloudflare global API key; other providers take api_key only",
            )
    if not raw:
        add(("accounts",), "list at least one account, or leave the section out")
    return accounts


def _check_rule_accounts(
    rule: dict[Any, Any], index: int, accounts: dict[str, str], add: Any
) -> None:
    """A rule's `accounts` must exist, and at least one of them must support it."""
    named = rule.get("accounts")
    names = [n for n in (named if isinstance(named, list) else []) if isinstance(n, str)]
    for i, name in enumerate(names):
        if name not in accounts:
            add(
                ("rules", index, "accounts", i),
                f"no account named '{name}'; defined: {', '.join(accounts) or 'none'}",
            )
    kind = rule.get("kind")
    if not isinstance(kind, str) or kind not in RULE_KINDS:
        return
    try:
        model = _ANY_RULE.validate_python({**rule, "name": "x"})
    except ValidationError:
        return  # reported by the schema
    candidates = [n for n in names if n in accounts] if names else list(accounts)
    if not candidates or any(unsupported(model, accounts[n]) is None for n in candidates):
        return
    why = "; ".join(f"{n} ({accounts[n]}): {unsupported(model, accounts[n])}" for n in candidates)
    add(("rules", index, "kind"), f"no account can run a {kind} rule: {why}")


def channel_url_problem(url: str) -> str | None:
    """Why apprise cannot use `url`, without ever repeating the URL (it embeds secrets)."""
    if not url.strip():
        return "the channel URL is empty"
    if not apprise.Apprise().add(url):
        scheme = url.split("://", 1)[0] if "://" in url else "(none)"
        return (
            f"apprise does not recognise this URL (scheme '{scheme[:20]}'); "
            "use an apprise URL such as slack://..., mailto://..., json://..."
        )
    return None
