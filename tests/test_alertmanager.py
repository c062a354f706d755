"""Alertmanager as a destination, against the real `alertmanager` binary: a real
`dialwatch run` posts to it, and its own routing delivers to a local webhook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dialwatch.alerting.decide import decide_all, rule_spec
from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.alerting.silences import Silence
from dialwatch.delivery.outbox import OutboxEntry
from dialwatch.delivery.render import render, to_outbox
from dialwatch.rules.evaluate import Finding
from dialwatch.rules.loading import load_rules
from dialwatch.rules.schema import RulesFile
from dialwatch.simulators.dial import DialSimulator
from tests.monitoring import alertmanager, get, get_text
from tests.processes import Service, dialwatch, service_env, wait_until, wait_until_async
from tests.servers import WebhookReceiver, free_port

SECRET_TOKEN = "am-bearer-SECRET-5a1e"
RULES = """\
channels:
  am:
    alertmanager: {urls}
    bearer_token: {token}
    labels: {{team: billing}}
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
    notify: [am]
  - name: wallet-critical
    kind: balance_below
    threshold: "$10.00"
    severity: critical
    notify: [am]
"""


QUIET_RULES = """\
channels:
  am: {alertmanager: ["http://127.0.0.1:9093", "http://127.0.0.1:9094"]}
time_intervals:
  always: [{times: [{start: "00:00", end: "23:59"}]}]
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
    notify: [am]
    mute_during: [always]
"""
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def posts(
    rules: RulesFile, state: AlertState, active: bool, *, silenced: bool = False
) -> list[OutboxEntry]:
    """What one check queues for wallet-low, from `state`, on a channel of two URLs
    under quiet hours that never end."""
    rule = rules.rules[0]
    spec = rule_spec(rules, rule, "dial", "dial")
    finding = Finding(active, "wallet balance $40.00 is below $50.00", (("Balance", "$40.00"),))
    silence = Silence(7, "wallet-low", None, NOW + timedelta(hours=1), "known", NOW)
    silences = [silence] if silenced else []
    decided = decide_all([(spec, finding)], {"wallet-low": state}, silences, (), "dial", NOW)
    outcomes = [render("dial", "dial", d, NOW) for d in decided]
    return to_outbox("dial", outcomes, rules.channels, NOW, timedelta(minutes=4))


def test_a_new_alert_waits_for_quiet_hours_but_a_known_one_is_kept_alive(tmp_path: Path) -> None:
    """Quiet hours hold a new alert's first post; the posts that keep an alert already
    posted alive, and its resolution, are state, not news: they go at once (else
    Alertmanager would resolve the alert by itself in the night)."""
    (tmp_path / "rules.yaml").write_text(QUIET_RULES)
    rules = load_rules(tmp_path / "rules.yaml", env={})
    first = posts(rules, AlertState(), active=True)
    assert [(e.channel, e.decision) for e in first] == [("am#1", "first"), ("am#2", "first")]
    assert all(e.hold_until is not None and not e.grouped for e in first)
    alert = json.loads(first[0].message.body)
    assert alert["validFor"] == 240
    assert "endsAt" not in alert

    since = NOW - timedelta(hours=2)
    firing = AlertState(Status.FIRING, since, NOW - timedelta(minutes=1), 1)
    kept_alive = posts(rules, firing, active=True)
    assert [(e.decision, e.hold_until) for e in kept_alive] == [("refresh", None)] * 2
    assert json.loads(kept_alive[0].message.body)["startsAt"] == "2026-11-26T08:00:00.000Z"

    resolved = posts(rules, firing, active=False)
    assert [(e.decision, e.hold_until) for e in resolved] == [("resolved", None)] * 2
    assert json.loads(resolved[0].message.body)["endsAt"] == "2026-11-26T10:00:00.000Z"

    assert posts(rules, firing, active=True, silenced=True) == []  # silenced in dialwatch: no posts
    assert posts(rules, AlertState(Status.FIRING, since, None, 0), active=True, silenced=True) == []


def test_the_channels_templates_write_summary_and_description(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        QUIET_RULES.replace(
            '"http://127.0.0.1:9094"]}',
            '"http://127.0.0.1:9094"], summary: "{{ account }}: {{ summary }}", '
            'description: "{{ description }}\\nRunbook: https://wiki.example.com/{{ rule }}"}',
        )
    )
    rules = load_rules(tmp_path / "rules.yaml", env={})
    alert = json.loads(posts(rules, AlertState(), active=True)[0].message.body)
    assert alert["annotations"] == {
        "summary": "dial: wallet balance $40.00 is below $50.00",
        "description": "Wallet balance $40.00 is below $50.00.\nBalance: $40.00\n"
        "Runbook: https://wiki.example.com/wallet-low",
        "balance": "$40.00",
    }


@pytest.fixture
async def am(tmp_path: Path, webhook: WebhookReceiver) -> AsyncIterator[str]:
    async with alertmanager(tmp_path / "am", f"http://127.0.0.1:{webhook.port}/hook") as url:
        yield url


async def start(tmp_path: Path, dial: DialSimulator, *urls: str) -> Service:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(urls=list(urls), token=SECRET_TOKEN))
    env = service_env(dial.base_url, rules, tmp_path / "state.db")
    env["DIALWATCH_EXTERNAL_URL"] = "https://dialwatch.example.com/"
    return await Service.start(env)


def sent(service: Service, decision: str) -> list[dict[str, Any]]:
    """The posts to the Alertmanager channel `am` the service logged, of `decision`."""
    return [
        e
        for e in service.logged("notify.sent")
        if e["channel"] == "am" and e["decision"] == decision
    ]


def notified(webhook: WebhookReceiver, rule: str, status: str) -> list[dict[str, Any]]:
    """The alerts about `rule` in `status` that Alertmanager's webhook notifications held."""
    return [
        alert
        for notification in webhook.received
        for alert in notification["alerts"]
        if alert["labels"]["alertname"] == rule and alert["status"] == status
    ]


async def test_a_balance_alert_arrives_through_alertmanagers_routing_and_resolves(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver, am: str
) -> None:
    dial.account.balance_cents = 4000  # $40.00: below $50, above $10
    service = await start(tmp_path, dial, am)
    try:
        await wait_until(lambda: bool(notified(webhook, "wallet-low", "firing")), timeout=30)
        alert = notified(webhook, "wallet-low", "firing")[0]
        assert alert["labels"] == {
            "alertname": "wallet-low", "account": "dial", "provider": "dial",
            "kind": "balance_below", "severity": "warning", "team": "billing",
        }  # fmt: skip
        annotations = alert["annotations"]
        assert annotations["summary"] == "wallet balance $40.00 is below $50.00"
        assert annotations["balance"] == "$40.00"
        assert annotations["threshold"] == "$50.00"
        assert annotations["description"].startswith("Wallet balance $40.00 is below $50.00.")
        assert alert["generatorURL"] == "https://dialwatch.example.com/#account-dial"
        # Alertmanager holds it alive until 4 intervals (of 1 s) after the latest post.
        _, held = await get(f"{am}/api/v2/alerts?filter=alertname%3D%22wallet-low%22")
        ends, posted = (datetime.fromisoformat(held[0][key]) for key in ("endsAt", "updatedAt"))
        assert timedelta(0) < ends - posted <= timedelta(seconds=4)

        # The next check posts it again (a refresh), which Alertmanager takes as the same
        # alert: its receivers hear nothing new.
        await wait_until(lambda: bool(sent(service, "refresh")), timeout=30)
        dial.account.balance_cents = 10000
        await wait_until(lambda: bool(notified(webhook, "wallet-low", "resolved")), timeout=30)
    finally:
        await service.stop()
    assert len(notified(webhook, "wallet-low", "firing")) == 1
    assert not notified(webhook, "wallet-critical", "firing")
    output = "\n".join(map(str, service.events))
    assert SECRET_TOKEN not in output
    assert len(sent(service, "first")) == 1
    assert len(sent(service, "resolved")) == 1


async def test_a_silence_made_in_alertmanager_mutes_the_alert_there(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver, am: str
) -> None:
    now = datetime.now(UTC)
    silence = {
        "matchers": [{"name": "alertname", "value": "wallet-low", "isRegex": False,
                      "isEqual": True}],
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test", "comment": "known: top-up ordered",
    }  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{am}/api/v2/silences", json=silence) as response,
    ):
        assert response.status == 200, await response.text()
        silence_id = (await response.json())["silenceID"]

    dial.account.balance_cents = 400  # $4.00: both rules fire
    service = await start(tmp_path, dial, am)
    try:
        await wait_until(lambda: bool(notified(webhook, "wallet-critical", "firing")), timeout=30)

        async def suppressed() -> bool:
            _, alerts = await get(f"{am}/api/v2/alerts?filter=alertname%3D%22wallet-low%22")
            return bool(alerts) and alerts[0]["status"]["silencedBy"] == [silence_id]

        await wait_until_async(suppressed)
        # Resolve the other alert: Alertmanager notifies its group again, while
        # wallet-low still fires there, silenced.
        dial.account.balance_cents = 2000
        await wait_until(lambda: bool(notified(webhook, "wallet-critical", "resolved")), timeout=30)
        assert await suppressed()
    finally:
        await service.stop()
    assert not notified(webhook, "wallet-low", "firing")


async def test_alertmanager_resolves_the_alert_itself_once_dialwatch_stops(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver, am: str
) -> None:
    dial.account.balance_cents = 4000
    service = await start(tmp_path, dial, am)
    try:
        await wait_until(lambda: bool(notified(webhook, "wallet-low", "firing")), timeout=30)
    finally:
        await service.stop()
    stopped = datetime.now(UTC)
    # Nothing posts a resolution: the last post's endsAt passes, and Alertmanager says so.
    await wait_until(lambda: bool(notified(webhook, "wallet-low", "resolved")), timeout=30)
    resolved = notified(webhook, "wallet-low", "resolved")[0]
    assert datetime.fromisoformat(resolved["endsAt"]) > stopped
    assert not [e for e in service.logged("notify.sent") if e["decision"] == "resolved"]


async def test_each_alertmanager_of_a_cluster_is_posted_to_and_retried_on_its_own(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver, am: str
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dial.account.balance_cents = 4000
    service = await start(tmp_path, dial, am, down)
    try:
        await wait_until(lambda: bool(notified(webhook, "wallet-low", "firing")), timeout=30)
        await wait_until(lambda: bool(service.logged("notify.failed")), timeout=30)
        _, metrics = await get_text(f"http://{service.listen}/metrics")
    finally:
        await service.stop()
    failed = service.logged("notify.failed")[0]
    assert failed["channel"] == "am#2"
    assert down in failed["error"]
    assert SECRET_TOKEN not in "\n".join(map(str, service.events))
    assert {e["channel"] for e in service.logged("notify.sent")} == {"am#1"}
    assert 'dialwatch_notifications_pending{channel="am#2"} 1.0' in metrics
    assert 'dialwatch_notifications_failed_total{channel="am#2"} 1.0' in metrics
    assert SECRET_TOKEN not in metrics


async def test_test_notify_posts_a_test_alert_to_each_alertmanager(
    tmp_path: Path, dial: DialSimulator, am: str
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(urls=[am, down], token=SECRET_TOKEN))
    ran = await dialwatch(
        "test-notify", "am", env=service_env(dial.base_url, rules, tmp_path / "state.db")
    )
    assert ran.code == 2  # one of the two failed: the command says so
    assert "am: FAILED: Alertmanager at " + down in ran.err
    assert SECRET_TOKEN not in ran.out + ran.err
    _, alerts = await get(f"{am}/api/v2/alerts?filter=alertname%3D%22dialwatch-test%22")
    assert alerts[0]["labels"] == {"alertname": "dialwatch-test", "severity": "info",
                                   "team": "billing"}  # fmt: skip
    assert alerts[0]["annotations"]["summary"] == "dialwatch test notification"
