"""The rules file's schema: rule kinds, accounts, channels, routes, digests.

Strict pydantic models (unknown keys are errors); loading them from YAML with
positions is `loading.py`, the checks across the file are `checks.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    SecretStr,
    StringConstraints,
    Tag,
    TypeAdapter,
    model_validator,
)
from yarl import URL

from dialwatch.providers import DEFAULT_PROVIDER, REGISTRY
from dialwatch.rules.time_intervals import TimeInterval
from dialwatch.settings import check_base_url, check_interval, is_loopback
from dialwatch.units import CREDITS, Money, minor_digits, parse_duration, parse_money

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
        """How far above the threshold the balance must climb to resolve: 5% of it, and
        at least one whole unit of its own currency."""
        if self.hysteresis is not None:
            return self.hysteresis
        currency = self.threshold.currency
        whole_unit = 10 ** minor_digits(currency)  # $1.00, 1 credit, ¥1
        return Money(max(whole_unit, abs(self.threshold.cents) * 5 // 100), currency)


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
    # trailing: the burn of the last `lookback`; seasonal: each coming hour spends what
    # that hour of the week usually does (the last 4 weeks), so a Friday evening's runway
    # counts the quiet weekend ahead.
    burn: Literal["trailing", "seasonal"] = "trailing"


def _baseline(value: object) -> timedelta:
    delta = parse_duration(value)
    if delta < timedelta(weeks=1) or delta % timedelta(weeks=1):
        raise ValueError("baseline is whole weeks, at least 1w (e.g. 4w)")
    return delta


# The robust z-score (distance from the median in scaled MADs) each sensitivity needs.
SENSITIVITY = {"low": 5.0, "medium": 3.5, "high": 2.5}


class SpendAnomaly(_RuleBase):
    """Spend in the trailing `window` is far from what this hour of the week usually
    spends (the median of the same window in each of the `baseline` weeks)."""

    kind: Literal["spend_anomaly"]
    window: Duration = timedelta(hours=1)
    baseline: Annotated[timedelta, PlainValidator(_baseline)] = timedelta(weeks=4)
    direction: Literal["up", "down", "both"] = "up"
    sensitivity: Literal["low", "medium", "high"] = "medium"
    min_impact: MoneyAmount = Money(2_000)
    min_percent: Annotated[int, Field(ge=0)] = 50
    match: Match = Match()

    @model_validator(mode="after")
    def _short_window(self) -> SpendAnomaly:
        if not timedelta(minutes=5) <= self.window <= timedelta(days=1):
            raise ValueError("window must be between 5m and 24h")
        return self


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
    | QuotaAbove
    | SpendAnomaly,
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
    "spend_anomaly": SpendAnomaly,
}
ANY_RULE: TypeAdapter[Rule] = TypeAdapter(Rule)
SnapshotRule = (
    BalanceBelow | SubscriptionCancelling | NumbersAtRisk | PaymentMethodExpiring | QuotaAbove
)
# dialwatch's own alerts, by name, with their kinds: they can be silenced and inhibit.
WATCHER_ALERTS = {"dialwatch-api-auth": "watcher_auth", "dialwatch-unhealthy": "watcher_unhealthy"}
# Rules fed by the activity ledger; without any, the ledger is not read at all.
LEDGER_KINDS = (SpendAbove, UsageItem, LedgerEvent, RunwayBelow, SpendAnomaly)
# Rules that are events (one message per batch of new items), not conditions that hold.
ItemRule = UsageItem | LedgerEvent
# Keys a rule inherits from `defaults:` when it does not set them itself.
# `notify` is not among them: a rule without its own goes by `routes`, then defaults.notify.
INHERITED = ("repeat_every", "max_repeats", "send_resolved", "for")

# Without an `accounts` section: the one account read with DIALWATCH_API_KEY.
DEFAULT_ACCOUNT = "dial"


def unsupported(rule: Rule, provider: str) -> str | None:
    """Why `rule` cannot run on an account of `provider`, or None if it can."""
    plugin = REGISTRY[provider]
    if rule.kind not in plugin.kinds:
        return f"{provider} supports {', '.join(plugin.kinds)}"
    if isinstance(rule, BalanceBelow):
        unit = "credits" if rule.threshold.currency == CREDITS else "money"
        if unit != plugin.balance_unit:
            example = "500 credits" if plugin.balance_unit == "credits" else "$50.00"
            return (
                f"{provider} balances are {plugin.balance_unit}: write a threshold like {example!r}"
            )
    return None


def _provider(value: object) -> str:
    if isinstance(value, str) and value in REGISTRY:
        return value
    names = [f"'{name}'" for name in REGISTRY]
    raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}")


def _base_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an https:// URL")
    return check_base_url(value)


class Account(_Strict):
    """One account to watch, at one provider, with its key (a SecretStr)."""

    name: Name
    provider: Annotated[str, PlainValidator(_provider)]
    api_key: SecretStr
    api_email: str | None = None  # Cloudflare global API key: the account's email
    base_url: Annotated[str, PlainValidator(_base_url)] | None = None
    interval: Annotated[timedelta, PlainValidator(check_interval)] | None = (
        None  # default: DIALWATCH_INTERVAL
    )

    @property
    def url(self) -> str:
        return self.base_url or REGISTRY[self.provider].base_url


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


class BasicAuth(_Strict):
    username: str
    password: SecretStr


class TLS(_Strict):
    """How to trust an Alertmanager's certificate, and the client certificate to show."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


def _alertmanager_url(value: object) -> str:
    url = URL(value) if isinstance(value, str) else None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError("an Alertmanager URL looks like http://alertmanager:9093")
    if url.user or url.password:
        raise ValueError("put the credentials in basic_auth, not in the URL")
    return str(value).rstrip("/")


AlertmanagerURL = Annotated[str, PlainValidator(_alertmanager_url)]


# The labels dialwatch puts on every alert it posts to Alertmanager.
ALERTMANAGER_LABELS = ("alertname", "account", "provider", "kind", "severity", "event_at")


class AlertmanagerChannel(_Strict):
    """Alertmanager's API (v2) as a destination, as Prometheus posts to it: one URL, or
    the URLs of an HA cluster (each is posted to, and retried, on its own)."""

    alertmanager: Annotated[tuple[AlertmanagerURL, ...], BeforeValidator(_one_or_many)]
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    tls: TLS = TLS()
    labels: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    summary: str | None = None  # Jinja2 templates for the annotations
    description: str | None = None
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _own_labels(self) -> AlertmanagerChannel:
        taken = sorted(set(self.labels) & set(ALERTMANAGER_LABELS))
        if taken:
            raise ValueError(
                f"labels: {', '.join(taken)} is set by dialwatch on every alert; "
                "choose another label name"
            )
        return self

    @model_validator(mode="after")
    def _credentials_in_clear(self) -> AlertmanagerChannel:
        if self.basic_auth is None and self.bearer_token is None:
            return self
        if not self.alertmanager:
            raise ValueError("give at least one Alertmanager URL")
        for value in self.alertmanager:
            url = URL(value)
            if url.scheme == "http" and not is_loopback(url.host or ""):
                raise ValueError(
                    f"{value}: credentials over plain http:// would cross the network in "
                    "clear text; use https://"
                )
        return self

    def delivery_keys(self, name: str) -> list[str]:
        """The outbox channel of each URL: the channel's own name for one URL, else
        `name#1`, `name#2`... so each URL keeps its own queue and retries."""
        if len(self.alertmanager) == 1:
            return [name]
        return [f"{name}#{i}" for i in range(1, len(self.alertmanager) + 1)]


def _channel_kind(value: object) -> str:
    if isinstance(value, dict | AlertmanagerChannel) and (
        isinstance(value, AlertmanagerChannel) or "alertmanager" in value
    ):
        return "alertmanager channel"
    return "apprise channel"


def _channel(value: object) -> object:
    return {"url": value} if isinstance(value, str) else value


AnyChannel = Annotated[
    Annotated[Channel, Tag("apprise channel")]
    | Annotated[AlertmanagerChannel, Tag("alertmanager channel")],
    Discriminator(_channel_kind),
    BeforeValidator(_channel),
]
# The discriminator's tags, which pydantic puts into an error's location.
CHANNEL_KINDS: dict[str, type[_Strict]] = {
    "apprise channel": Channel,
    "alertmanager channel": AlertmanagerChannel,
}


def delivery_keys(channels: Mapping[str, Channel | AlertmanagerChannel], name: str) -> list[str]:
    """Where messages for channel `name` are queued: its name, or one per URL."""
    channel = channels.get(name)
    return channel.delivery_keys(name) if isinstance(channel, AlertmanagerChannel) else [name]


class RulesFile(_Strict):
    """A validated rules file."""

    channels: dict[Name, AnyChannel]
    accounts: tuple[Account, ...] = ()  # none: one Dial account from DIALWATCH_API_KEY
    defaults: Defaults = Defaults()
    rules: tuple[Rule, ...] = ()
    routes: tuple[Route, ...] = ()
    inhibit: tuple[Inhibit, ...] = ()
    time_intervals: dict[Name, tuple[TimeInterval, ...]] = {}
    digest: tuple[Digest, ...] = ()

    def account_providers(self) -> dict[str, str]:
        """Each account's name and provider (without an `accounts` section, the default)."""
        return {a.name: a.provider for a in self.accounts} or {DEFAULT_ACCOUNT: DEFAULT_PROVIDER}

    def rules_for(self, account: str, provider: str) -> tuple[Rule, ...]:
        """The rules that run on `account`: those naming it, or naming no account, whose
        kind its provider supports."""
        return tuple(
            rule
            for rule in self.rules
            if (not rule.accounts or account in rule.accounts)
            and unsupported(rule, provider) is None
        )
