"""Per-rule and per-channel templates, checked at validate, applied in the check cycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialwatch.delivery.messages import Message
from dialwatch.delivery.notifier import AppriseNotifier, trim
from dialwatch.errors import ConfigError
from dialwatch.rules.loading import load_rules
from tests.conftest import MakeHarness
from tests.servers import SmtpServer, WebhookReceiver
from tests.test_service import check_and_deliver

TEMPLATED = """
channels:
  oncall:
    url: "{webhook}"
    title: "{{{{ severity|upper }}}} {{{{ rule }}}} on {{{{ account }}}}"
    format: markdown
  finance: "{smtp}"
defaults:
  notify: [oncall, finance]
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
    title: "Wallet {{{{ account }}}} at {{{{ balance }}}}"
    body: |
      **{{{{ balance }}}}** is under {{{{ threshold }}}}{{{{ ' (' ~ change ~ ')' if change }}}}.
      Top up: https://getdial.ai/billing
"""


async def test_rule_and_channel_templates_shape_the_messages(
    make_harness: MakeHarness, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """The rule's templates apply everywhere; the oncall channel's title overrides them there."""
    h = await make_harness(TEMPLATED)
    h.dial.account.balance_cents = 4000
    await check_and_deliver(h)

    assert webhook.titles == ["WARNING wallet-low on dial"]
    assert webhook.received[0]["message"] == (
        "**$40.00** is under $50.00.\nTop up: https://getdial.ai/billing"
    )
    assert smtp.subjects == ["Wallet dial at $40.00"]


@pytest.mark.parametrize(
    ("yaml_text", "line", "key", "message"),
    [
        (
            "rules:\n  - name: w\n    kind: balance_below\n    threshold: '$5'\n"
            "    body: '{{ ballance }}'\n",
            9,
            "rules[0].body",
            "template error: 'ballance' is undefined; fields here:",
        ),
        (
            "rules:\n  - name: w\n    kind: balance_below\n    threshold: '$5'\n"
            "    title: '{{ balance '\n",
            9,
            "rules[0].title",
            "template error: unexpected end of template",
        ),
    ],
    ids=["unknown-field", "syntax-error"],
)
def test_validate_rejects_templates_that_cannot_render(
    tmp_path: Path, yaml_text: str, line: int, key: str, message: str
) -> None:
    """A misspelt field or broken syntax fails validation at the template's line."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels:\n  oncall: 'json://127.0.0.1:9/x'\ndefaults:\n  notify: [oncall]\n" + yaml_text
    )
    with pytest.raises(ConfigError) as caught:
        load_rules(path, env={})
    assert f"{path}:{line}:5: {key}: {message}" in str(caught.value)


def test_channel_templates_may_use_only_the_common_fields(tmp_path: Path) -> None:
    """A channel gets every kind of alert, so `balance` is not a field there."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels:\n  oncall:\n    url: 'json://127.0.0.1:9/x'\n    title: '{{ balance }}'\n"
        "defaults:\n  notify: [oncall]\nrules: []\n"
    )
    with pytest.raises(ConfigError, match=r"channels.oncall.title: template error: 'balance'"):
        load_rules(path, env={})


async def test_long_bodies_are_trimmed_to_the_services_limit(
    webhook: WebhookReceiver, tmp_path: Path
) -> None:
    """A body over the JSON service's 32,768 characters arrives cut, and says so."""
    path = tmp_path / "rules.yaml"
    path.write_text(f"channels:\n  oncall: '{webhook.url}'\nrules: []\n")
    rules = load_rules(path, env={})
    notifier = AppriseNotifier(rules.channels, timeout=10, min_interval=0)
    error = await notifier.send("oncall", Message("t", "x" * 40_000, "info"))
    assert error is None
    body = webhook.received[0]["message"]
    assert len(body) == 32_768
    assert body.endswith(" […]")
    assert trim("short", 10) == "short"


async def test_channel_format_decides_how_email_bodies_are_written(
    make_harness: MakeHarness, smtp: SmtpServer
) -> None:
    """An email channel with format: html gets an HTML part; the default is plain text."""
    h = await make_harness(
        TEMPLATED.replace('  finance: "{smtp}"', '  finance:\n    url: "{smtp}"\n    format: html')
    )
    h.dial.account.balance_cents = 4000
    await check_and_deliver(h)
    types = {part.get_content_type() for part in smtp.messages[0].walk()}
    assert "text/html" in types
