"""The rules file: every rejection points at file, line, column and key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from dialwatch.alerting.routing import targets_for
from dialwatch.errors import ConfigError
from dialwatch.rules.loading import load_rules
from dialwatch.rules.schema import BalanceBelow, SpendAbove, SpendAnomaly
from dialwatch.units import Money

CASES = Path(__file__).parent / "config_cases"
EXAMPLE = Path(__file__).parent.parent / "dialwatch" / "rules" / "example.yaml"


@pytest.mark.parametrize(
    ("case", "line", "col", "key", "message"),
    [
        (
            "misspelt_key",
            6,
            5,
            "rules[0].threshhold",
            "unknown key; did you mean 'threshold'? valid keys here: name, severity",
        ),
        (
            "undefined_channel",
            7,
            22,
            "rules[0].notify[1]",
            "no channel named 'pager'; defined: oncall",
        ),
        (
            "duplicate_rule",
            9,
            5,
            "rules[1].name",
            "duplicate rule name 'wallet-low' (first at rules[0])",
        ),
        (
            "unset_variable",
            2,
            11,
            "channels.oncall",
            "environment variable ${DIALWATCH_TEST_UNSET_WEBHOOK} is not set",
        ),
        (
            "float_money",
            8,
            5,
            "rules[0].threshold",
            'money must be written as a string such as "$50.00" or "50 USD", not a float',
        ),
        (
            "unknown_kind",
            7,
            5,
            "rules[0].kind",
            "unknown rule kind; did you mean 'balance_below'? valid kinds: balance_below",
        ),
        (
            "bad_duration",
            5,
            3,
            "defaults.repeat_every",
            "'sometimes' is not a duration; write it like 30s, 5m, 4h, 1h30m or 7d",
        ),
        (
            "bad_severity",
            8,
            5,
            "rules[0].severity",
            "Input should be 'info', 'warning' or 'critical'",
        ),
        (
            "no_channel_to_notify",
            4,
            5,
            "rules[0]",
            "no channel to notify: set notify here, in defaults.notify, or add routes",
        ),
        ("missing_threshold", 6, 5, "rules[0].threshold", "required key is missing"),
        (
            "bad_channel_url",
            2,
            3,
            "channels.oncall",
            "apprise does not recognise this URL (scheme 'notaservice')",
        ),
        ("yaml_syntax", 6, 1, "(yaml)", "expected ',' or ']'"),
        ("duplicate_key", 9, 5, "rules[0].threshold", "duplicate key; each key once"),
        ("unknown_top_level", 3, 1, "defualts", "unknown key; did you mean 'defaults'?"),
        (
            "window_and_period",
            6,
            5,
            "rules[0]",
            "set exactly one of window (e.g. 24h) or period (day, week, month)",
        ),
        (
            "bad_timezone",
            10,
            5,
            "rules[0].timezone",
            "unknown timezone 'Mars/Olympus'; use an IANA name such as Europe/Berlin",
        ),
        (
            "unknown_match_key",
            10,
            7,
            "rules[0].match.fares",
            "unknown key; did you mean 'fare'? valid keys here: fare, number, attribution",
        ),
        (
            "inhibit_unknown_rule",
            10,
            14,
            "inhibit[0].source.rule",
            "no rule named 'wallet-empty'; known: wallet-low, dialwatch-api-auth",
        ),
        (
            "bad_ledger_type",
            8,
            21,
            "rules[0].types[1]",
            "Input should be 'credit', 'payment', 'purchase', 'charge' or 'usage'",
        ),
        (
            "unknown_rule_account",
            16,
            27,
            "rules[0].accounts[1]",
            "no account named 'dial-staging'; defined: dial-prod, sms",
        ),
        (
            "unsupported_kind",
            11,
            5,
            "rules[0].kind",
            "no account can run a quota_above rule: sms (mifumo): mifumo supports "
            "balance_below, spend_above, usage_item, ledger_event",
        ),
        (
            "credits_on_dial",
            7,
            5,
            "rules[0].kind",
            "no account can run a balance_below rule: dial (dial): dial balances are money: "
            "write a threshold like '$50.00'",
        ),
        (
            "api_email_on_dial",
            5,
            5,
            "accounts[0].api_email",
            "api_email is for a Cloudflare global API key; other providers take api_key only",
        ),
        (
            "plain_http_account",
            5,
            5,
            "accounts[0].base_url",
            "plain http:// is only allowed to a loopback host",
        ),
        ("duplicate_account", 5, 5, "accounts[1].name", "duplicate account name 'sms'"),
        (
            "quota_percent_and_overage",
            10,
            5,
            "rules[0]",
            "set exactly one of percent (e.g. 80) or overage: true",
        ),
        (
            "unknown_provider",
            3,
            5,
            "accounts[0].provider",
            "Input should be 'dial', 'mifumo', 'hookbridge' or 'cloudflare'",
        ),
        (
            "misspelt_channel_key",
            4,
            5,
            "channels.oncall.fromat",
            "unknown key; did you mean 'format'? valid keys here: url, format, title, body",
        ),
        (
            "template_raises",
            8,
            5,
            "rules[0].title",
            "template error: integer division or modulo by zero",
        ),
        (
            "alertmanager_misspelt",
            4,
            5,
            "channels.am.bearer_tokn",
            "unknown key; did you mean 'bearer_token'? valid keys here: alertmanager, basic_auth",
        ),
        (
            "alertmanager_credentials_in_clear",
            2,
            3,
            "channels.am",
            "http://am-2.example.com:9093: credentials over plain http:// would cross the "
            "network in clear text; use https://",
        ),
        (
            "alertmanager_reserved_label",
            2,
            3,
            "channels.am",
            "labels: severity is set by dialwatch on every alert; choose another label name",
        ),
        (
            "alertmanager_digest",
            11,
            23,
            "digest[0].notify[1]",
            "'am' is an Alertmanager channel, which takes alerts, not digests",
        ),
    ],
)
def test_rejected_rules_file_names_file_line_column_and_key(
    case: str, line: int, col: int, key: str, message: str
) -> None:
    """Each broken file fails with FILE:LINE:COL: key: what is wrong."""
    path = CASES / f"{case}.yaml"
    with pytest.raises(ConfigError) as caught:
        load_rules(path, env={})

    assert f"{path}:{line}:{col}: {key}: {message}" in str(caught.value)


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    """A file with three mistakes lists all three, in line order."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels:\n  oncall: 'json://127.0.0.1:9/x'\nrules:\n"
        "  - name: a\n    kind: balance_below\n    threshold: 5\n    notify: [pager]\n"
        "  - name: b\n    kind: subscription_cancelling\n    notify: [oncall]\n    sevrity: info\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_rules(path, env={})
    lines = str(caught.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{path}:6:5",
        f"{path}:7:14",
        f"{path}:11:5",
    ]
    assert "rules[0].threshold: 5 is not an amount" in lines[0]
    assert "rules[0].notify[0]: no channel named 'pager'" in lines[1]
    assert "rules[1].sevrity: unknown key; did you mean 'severity'?" in lines[2]


def test_channel_url_never_appears_in_errors() -> None:
    """A rejected channel URL is described by its scheme only: it embeds tokens."""
    with pytest.raises(ConfigError) as caught:
        load_rules(CASES / "bad_channel_url.yaml", env={})
    assert "secret-token-123456" not in str(caught.value)


def test_example_rules_file_is_valid_and_means_what_it_says() -> None:
    """The example (dialwatch/rules/example.yaml, `dialwatch init --example`) loads, with ${VAR}s set, and its values parse exactly."""
    rules = load_rules(
        EXAMPLE,
        env={
            "SLACK_WEBHOOK_URL": "slack://TokenA/TokenB/TokenC/#alerts",
            "SMTP_PASSWORD": "pw",
            "PAGER_URL": "pagerduty://IntegrationKey@ApiKey",
            "DIAL_API_KEY": "sk_live_1",
            "MIFUMO_API_KEY": "mf_1",
            "HOOKBRIDGE_API_KEY": "hb_live_1",
            "CF_API_TOKEN": "cf_1",
        },
    )
    assert list(rules.channels) == ["oncall", "finance", "pager"]
    assert [(a.name, a.provider, a.url) for a in rules.accounts] == [
        ("dial-prod", "dial", "https://getdial.ai"),
        ("sms", "mifumo", "https://mifumosms.mifumolabs.com"),
        ("webhooks", "hookbridge", "https://api.hookbridge.io"),
        ("cf", "cloudflare", "https://api.cloudflare.com/client/v4"),
    ]
    assert rules.accounts[2].interval == timedelta(minutes=15)
    running = {
        a.name: [r.name for r in rules.rules_for(a.name, a.provider)] for a in rules.accounts
    }
    assert running["webhooks"] == ["webhooks-80", "webhooks-overage"]
    assert running["sms"] == ["sms-credits-low", "daily-spend", "expensive-call", "money-in"]
    assert running["cf"] == ["daily-spend", "expensive-call", "money-in", "cloudflare-charges"]
    assert "sms-credits-low" not in running["dial-prod"]
    assert "runway" in running["dial-prod"]
    low = rules.rules[0]
    assert isinstance(low, BalanceBelow)
    assert low.threshold == Money(5000, "USD")
    assert low.hysteresis == Money(250, "USD")
    assert low.notify == ("oncall", "finance")
    assert [r.name for r in rules.rules] == [
        "wallet-low",
        "wallet-empty",
        "sms-credits-low",
        "webhooks-80",
        "webhooks-overage",
        "cancelling",
        "numbers-at-risk",
        "card-expiring",
        "daily-spend",
        "sms-this-month",
        "expensive-call",
        "money-in",
        "cloudflare-charges",
        "runway",
        "spend-spike",
    ]
    spike = rules.rules[-1]
    assert isinstance(spike, SpendAnomaly)
    assert (spike.window, spike.baseline, spike.min_impact) == (
        timedelta(hours=1),
        timedelta(weeks=4),
        Money(2000, "USD"),
    )
    assert rules.time_intervals["nights"][0].weekdays == (0, 1, 2, 3, 4)
    assert rules.inhibit[0].target.rule == ("wallet-low",)
    assert (rules.digest[0].every, rules.digest[0].weekday) == ("week", 0)
    assert rules.channels["finance"].body_format == "text"
    assert rules.rules[0].body is not None
    monthly = rules.rules[9]
    assert isinstance(monthly, SpendAbove)
    assert (monthly.period, monthly.timezone, monthly.match.fare) == (
        "month",
        "Europe/Berlin",
        "sms.*",
    )
    assert monthly.amount == Money(25000, "USD")
    empty = rules.rules[1]
    assert empty.notify == ()  # none of its own: routed (critical goes to oncall and pager)
    route = targets_for(rules, empty.name, empty.kind, empty.severity, "dial", "dial", empty)
    assert [t.channel for t in route] == ["oncall", "pager"]
    runway = rules.rules[-1]
    fallback = targets_for(rules, runway.name, runway.kind, "warning", "dial", "dial", runway)
    assert [t.channel for t in fallback] == ["oncall"]  # no route matches: defaults.notify
    assert empty.repeat_every == timedelta(hours=4)
    assert rules.rules[6].severity == "critical"


def test_repeat_every_never_disables_reminders(tmp_path: Path) -> None:
    """`repeat_every: never` is read as no repeat at all."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels: {oncall: 'json://127.0.0.1:9/x'}\ndefaults: {notify: [oncall]}\n"
        "rules:\n  - {name: c, kind: subscription_cancelling, repeat_every: never}\n"
    )
    assert load_rules(path, env={}).rules[0].repeat_every is None
