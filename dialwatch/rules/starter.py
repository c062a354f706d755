"""`dialwatch init`: a commented starter rules file for the providers and channels a
new user names, and the environment variables it reads."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from dialwatch.providers import REGISTRY

PROVIDERS = ("dial", "mifumo", "hookbridge", "cloudflare")


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str
    required: bool = True


# Per provider: the account entry and its rules (YAML, commented), and its variables.
_ACCOUNTS = {
    "dial": (
        "dial",
        "Dial (telephony): the wallet, subscription, numbers, cards and the usage ledger",
        [Variable("DIAL_API_KEY", "your Dial API key (sk_live_...)")],
    ),
    "mifumo": (
        "sms",
        "Mifumo SMS: the SMS credit balance and the billing history",
        [Variable("MIFUMO_API_KEY", "your Mifumo API key")],
    ),
    "hookbridge": (
        "webhooks",
        "HookBridge: this month's message quota",
        [Variable("HOOKBRIDGE_API_KEY", "your HookBridge API key")],
    ),
    "cloudflare": (
        "cf",
        "Cloudflare: the billing history (charges)",
        [Variable("CF_API_TOKEN", "a Cloudflare API token with Billing: Read")],
    ),
}
_RULES = {
    "dial": """\
  - name: wallet-low                  # unique; names the alert in messages and silences
    kind: balance_below               # the wallet is below the threshold
    threshold: "$50.00"               # money as a string: "$50.00", "50 USD"
    accounts: [dial]                  # default: every account whose provider supports it
  - name: wallet-empty-soon
    kind: runway_below                # at the burn of the last `lookback`, empty within `runway`
    runway: 2d
    lookback: 24h
    severity: critical                # info | warning (default) | critical
    accounts: [dial]
  - name: hourly-spend
    kind: spend_above                 # spend in a rolling window (or a calendar period)
    window: 1h                        # or period: day | week | month (with timezone:)
    amount: "$25.00"                  # `dialwatch backtest --suggest` learns a better one
    for: 10m                          # only if it holds this long
    accounts: [dial]
  - name: numbers-at-risk
    kind: numbers_at_risk             # Dial has scheduled your numbers for release
    accounts: [dial]
  - name: subscription-cancelling
    kind: subscription_cancelling     # the plan is set to cancel at the period's end
    accounts: [dial]
  - name: card-expiring
    kind: payment_method_expiring     # the default card expires within `within`
    within: 30d
    accounts: [dial]
""",
    "mifumo": """\
  - name: sms-credits-low
    kind: balance_below
    threshold: 500 credits            # Mifumo's balance is SMS credits, not money
    accounts: [sms]
  - name: sms-daily-spend
    kind: spend_above
    window: 24h
    amount: "$100.00"
    accounts: [sms]
""",
    "hookbridge": """\
  - name: quota-80
    kind: quota_above                 # this month's usage reached `percent` of the plan
    percent: 80
    accounts: [webhooks]
  - name: quota-over
    kind: quota_above
    overage: true                     # ... or went over it
    severity: critical
    accounts: [webhooks]
""",
    "cloudflare": """\
  - name: cloudflare-charges
    kind: ledger_event                # new ledger items of these types: one message per batch
    types: [charge]
    accounts: [cf]
  - name: cloudflare-monthly-spend
    kind: spend_above
    period: month
    timezone: UTC
    amount: "$500.00"
    accounts: [cf]
""",
}
# Per channel kind: the channel entry (name, value, comment) and its variable.
CHANNELS = {
    "slack": ("slack", '"${SLACK_WEBHOOK_URL}"', "slack://TokenA/TokenB/TokenC/#channel"),
    "email": ("email", '{url: "${EMAIL_URL}", format: text}',
              "mailtos://user:password@smtp.example.com?to=you@example.com"),
    "webhook": ("webhook", '"${WEBHOOK_URL}"', "json://hooks.example.com/dialwatch"),
    "discord": ("discord", '"${DISCORD_WEBHOOK_URL}"', "discord://WebhookID/WebhookToken"),
    "teams": ("teams", '"${TEAMS_WEBHOOK_URL}"', "workflow://host/workflows/ID/triggers/... (a Teams workflow)"),
    "telegram": ("telegram", '"${TELEGRAM_URL}"', "tgram://BotToken/ChatID"),
    "pagerduty": ("pagerduty", '"${PAGERDUTY_URL}"', "pagerduty://IntegrationKey@ApiKey"),
    "alertmanager": ("alertmanager", '{alertmanager: "${ALERTMANAGER_URL}"}',
                     "http://alertmanager:9093 (Alertmanager's API v2)"),
}  # fmt: skip
CHANNEL_KINDS = tuple(CHANNELS)


def _variable_of(value: str) -> str:
    return value.split("${", 1)[1].split("}", 1)[0]


def starter(providers: list[str], channels: list[str]) -> tuple[str, list[Variable]]:
    """The starter file for `providers` and `channels` (each at least one: Dial and
    Slack if none is named), and the variables it reads."""
    providers = list(dict.fromkeys(providers or ["dial"]))
    channels = list(dict.fromkeys(channels or ["slack"]))
    variables: list[Variable] = []
    lines = [
        "# dialwatch rules file, written by `dialwatch init`. Check it: `dialwatch validate`.",
        "# ${VAR} is read from the environment at start (an unset one is an error);",
        "# ${VAR:-default} falls back to the default. Keep keys and tokens in the environment.",
        "# Every field: `dialwatch init --example`.",
        "",
        "# The billing accounts to watch; each is checked every DIALWATCH_INTERVAL (60s).",
        "accounts:",
    ]
    for provider in providers:
        name, about, needs = _ACCOUNTS[provider]
        url_var = f"{provider.upper()}_BASE_URL"
        lines += [
            f"  - name: {name:<29} # {about}",
            f"    provider: {provider}",
            f'    api_key: "${{{needs[0].name}}}"',
            f"    # the API; `dialwatch simulate` prints a {url_var} for its simulator",
            f'    base_url: "${{{url_var}:-{_default_url(provider)}}}"',
        ]
        variables += needs
        variables.append(Variable(url_var, "the API's address (default: the real one)", False))
    lines += [
        "",
        "# Where notifications go: name -> apprise URL (the URLs hold tokens: never logged).",
    ]
    lines.append("channels:")
    for kind in channels:
        name, value, example = CHANNELS[kind]
        lines.append(f"  {name}: {value}")
        variables.append(Variable(_variable_of(value), f"e.g. {example}"))
    names = ", ".join(CHANNELS[kind][0] for kind in channels)
    lines += [
        "",
        "# What every rule takes unless it says otherwise.",
        "defaults:",
        f"  notify: [{names}]{' ' * max(1, 22 - len(names))}# also where dialwatch's own alerts go",
        "  repeat_every: 4h                # remind this often while an alert fires; or never",
        "  send_resolved: true             # say when it clears",
        "",
        "# The rules: what to alert on.",
        "rules:",
    ]
    for provider in providers:
        lines.append(_RULES[provider].rstrip("\n"))
    return "\n".join(lines) + "\n", variables


def _default_url(provider: str) -> str:
    return REGISTRY[provider].base_url


def example() -> str:
    """The full documented example, as shipped in the package."""
    return resources.files("dialwatch.rules").joinpath("example.yaml").read_text("utf-8")
