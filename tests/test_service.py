"""The check cycle against a real simulated Dial API, a webhook receiver and SMTP."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dialwatch.alerting.lifecycle import Decision, Status
from dialwatch.delivery.outbox import deliver_due
from dialwatch.errors import ConfigError
from dialwatch.pipeline.cycle import AUTH_ALERT, run_checks, run_cycle
from dialwatch.simulators import Fault
from dialwatch.store import open_store
from tests.conftest import API_KEY, RULES, Harness, MakeHarness
from tests.servers import SmtpServer, WebhookReceiver


async def check_and_deliver(h: Harness) -> Any:
    report = await run_cycle(h.watcher)
    await deliver_due(h.watcher.store, h.watcher.notifier, h.clock.now())
    return report


async def test_low_balance_alerts_both_channels_with_the_balance(
    harness: Harness, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """A balance under the threshold reaches Slack-like webhook and email, with amounts."""
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)

    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    assert webhook.received[0]["type"] == "warning"
    assert "Threshold: $50.00" in webhook.received[0]["message"]
    assert smtp.subjects == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    assert "Balance: $40.00" in smtp.bodies()[0]


async def test_healthy_account_sends_nothing(harness: Harness, webhook: WebhookReceiver) -> None:
    """With the simulated default account (balance $235.00, card valid), nothing fires."""
    report = await check_and_deliver(harness)

    assert report.firing == []
    assert webhook.received == []


async def test_no_renotification_inside_repeat_every_then_a_reminder(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """A firing alert is sent once, not again within repeat_every (4h), then reminded."""
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    for _ in range(10):
        harness.clock.advance(minutes=20)
        report = await check_and_deliver(harness)
    assert [o.decision for o in report.outcomes if o.spec.name == "wallet-low"] == [Decision.NONE]
    assert len(webhook.received) == 1

    harness.clock.advance(minutes=40)  # 4h after the first notification
    await check_and_deliver(harness)
    assert len(webhook.received) == 2
    assert webhook.titles[1].startswith("[WARNING] still firing: dial / wallet-low")
    assert "Reminder: 1" in webhook.received[1]["message"]


async def test_resolved_notice_after_top_up(
    harness: Harness, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """A top-up sends one resolved notice per channel, with notify type success."""
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    harness.dial.account.balance_cents = 14000
    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)
    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)

    assert (
        webhook.titles[1]
        == "[RESOLVED] dial / wallet-low: wallet balance $140.00 is back above $50.00"
    )
    assert webhook.received[1]["type"] == "success"
    assert "up $100.00 since the last check (was $40.00)" in webhook.received[1]["message"]
    assert len(webhook.received) == 2
    assert len(smtp.messages) == 2


async def test_two_thresholds_each_fire_once_per_crossing(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """Falling through $50 then $10 sends one warning and one critical, nothing more."""
    for cents in (6000, 4900, 3000, 900, 500):
        harness.dial.account.balance_cents = cents
        harness.clock.advance(minutes=5)
        await check_and_deliver(harness)

    assert webhook.titles == [
        "[WARNING] dial / wallet-low: wallet balance $49.00 is below $50.00",
        "[CRITICAL] dial / wallet-critical: wallet balance $9.00 is below $10.00",
    ]
    assert webhook.received[1]["type"] == "failure"


async def test_balance_wobbling_around_threshold_does_not_flap(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """After firing at $49.99, bouncing to $50.10 does not resolve (margin $2.50)."""
    for cents in (4999, 5010, 4990, 5200, 4995):
        harness.dial.account.balance_cents = cents
        harness.clock.advance(minutes=1)
        await check_and_deliver(harness)
    assert len(webhook.received) == 1

    harness.dial.account.balance_cents = 5250
    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)
    assert webhook.titles[-1].startswith("[RESOLVED] dial / wallet-low: wallet balance $52.50")


async def test_for_holds_an_alert_pending_before_it_fires(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """With `for: 10m`, a low balance is pending for 10 minutes, then fires once."""
    text = harness.rules_path.read_text().replace(
        "    severity: warning\n", "    severity: warning\n    for: 10m\n", 1
    )
    harness.rules_path.write_text(text)
    from dialwatch.rules.loading import load_rules

    harness.watcher.rules = load_rules(harness.rules_path)
    harness.dial.account.balance_cents = 4000
    report = await check_and_deliver(harness)
    statuses = {o.spec.name: o.state.status for o in report.outcomes}
    assert statuses["wallet-low"] is Status.PENDING
    harness.clock.advance(minutes=9)
    await check_and_deliver(harness)
    assert webhook.received == []
    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)
    assert len(webhook.received) == 1


async def test_a_pending_alert_is_judged_by_its_threshold_not_its_resolve_level(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """One reading below the threshold starts `for: 10m`; a balance back above it (though
    within the resolve margin) ends the pending alert: nothing fires, and no message
    ever says $50.50 is below $50.00."""
    text = harness.rules_path.read_text().replace(
        "    severity: warning\n", "    severity: warning\n    for: 10m\n", 1
    )
    harness.rules_path.write_text(text)
    from dialwatch.rules.loading import load_rules

    harness.watcher.rules = load_rules(harness.rules_path)
    harness.dial.account.balance_cents = 4999
    await check_and_deliver(harness)
    harness.dial.account.balance_cents = 5050
    for _ in range(12):
        harness.clock.advance(minutes=1)
        report = await check_and_deliver(harness)
    statuses = {o.spec.name: o.state.status for o in report.outcomes}
    assert statuses["wallet-low"] is Status.INACTIVE
    assert webhook.received == []


@pytest.mark.parametrize(
    ("fault", "expected_log"),
    [
        (Fault.server_error(503), "server error"),
        (Fault.rate_limited("2"), "rate limited"),
        (Fault.html(), "expected a JSON body, got text/html"),
        (Fault.truncated(), "expected a JSON body, got application/json"),
        (
            Fault.json_body({"subscription": None, "numbers": [], "paymentMethods": []}),
            "balanceCents: Field required",
        ),
        (
            Fault.json_body(
                {"balanceCents": "12.00", "subscription": None, "numbers": [], "paymentMethods": []}
            ),
            "balanceCents: Input should be a valid integer",
        ),
    ],
    ids=["5xx", "429", "html", "truncated", "missing-field", "wrong-type"],
)
async def test_broken_responses_fail_the_check_without_a_crash_or_a_zero_balance(
    harness: Harness, webhook: WebhookReceiver, fault: Fault, expected_log: str, log_lines: Any
) -> None:
    """A persistently broken API fails the check (logged), alerts nothing, then recovers."""
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)  # wallet-low firing
    harness.dial.faults.extend([fault] * 4)  # every attempt of the next check

    harness.clock.advance(minutes=1)
    report = await check_and_deliver(harness)

    assert report.error is not None
    assert report.snapshot is None
    failed = [line for line in log_lines() if line["event"] == "check.failed"]
    assert expected_log in failed[0]["error"]
    assert len(webhook.received) == 1  # no resolved, no "$0" alert
    assert (await harness.watcher.store.alert_states("dial"))["wallet-low"].status is Status.FIRING

    harness.dial.account.balance_cents = 14000
    harness.clock.advance(minutes=1)
    report = await check_and_deliver(harness)
    assert report.error is None
    assert webhook.titles[-1].startswith("[RESOLVED] dial / wallet-low")


async def test_transient_errors_are_retried_with_backoff_and_retry_after(
    harness: Harness,
) -> None:
    """A 503 and a 429 (Retry-After: 3) inside one check are retried; the check succeeds."""
    harness.dial.faults.extend([Fault.server_error(502), Fault.rate_limited("3")])

    report = await run_cycle(harness.watcher)

    assert report.error is None
    assert report.snapshot is not None
    assert len(harness.dial.requests) == 3
    assert 0 <= harness.sleep.delays[0] <= 0.5  # full jitter on the first backoff step
    assert harness.sleep.delays[1] == 3.0  # the server's Retry-After


async def test_revoked_key_alerts_the_default_channels_and_resolves(
    harness: Harness, webhook: WebhookReceiver, smtp: SmtpServer, log_lines: Any
) -> None:
    """A 401 is logged as a rejected key and sent as dialwatch's own critical alert."""
    harness.dial.account.api_key = "sk_live_rotated"
    report = await check_and_deliver(harness)

    assert report.error is not None
    assert webhook.titles == [
        f"[CRITICAL] dial / {AUTH_ALERT}: the billing API rejected dialwatch's API key for "
        "dial; no rule can be checked until it is replaced"
    ]
    assert smtp.messages == []  # defaults.notify is [oncall] only
    assert len(harness.dial.requests) == 1  # a 401 is not retried
    auth_logs = [line for line in log_lines() if line["event"] == "check.auth_failed"]
    assert "wrong or revoked" in auth_logs[0]["error"]

    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)
    assert len(webhook.received) == 1  # checked again, not re-sent

    harness.dial.account.api_key = API_KEY
    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)
    assert webhook.titles[-1].startswith(f"[RESOLVED] dial / {AUTH_ALERT}")


async def test_smtp_down_then_back_delivers_once_without_resending_webhook(
    harness: Harness, webhook: WebhookReceiver, smtp: SmtpServer, log_lines: Any
) -> None:
    """Email fails while SMTP is down, is retried from the outbox, and arrives once."""
    smtp.stop()
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    assert len(webhook.received) == 1
    failures = [line for line in log_lines() if line["event"] == "notify.failed"]
    assert failures[0]["channel"] == "finance"
    assert await harness.watcher.store.pending_count() == 1

    harness.clock.advance(seconds=10)  # before the 30 s backoff: not retried
    await deliver_due(harness.watcher.store, harness.watcher.notifier, harness.clock.now())
    assert len([x for x in log_lines() if x["event"] == "notify.failed"]) == 1

    smtp.start()
    harness.clock.advance(seconds=25)
    report = await deliver_due(harness.watcher.store, harness.watcher.notifier, harness.clock.now())
    assert [row.channel for row in report.delivered] == ["finance"]
    assert smtp.subjects == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    assert len(webhook.received) == 1

    harness.clock.advance(hours=1)
    await check_and_deliver(harness)
    assert len(smtp.messages) == 1
    assert len(webhook.received) == 1


async def test_undeliverable_notification_expires_and_says_so(
    harness: Harness, smtp: SmtpServer, log_lines: Any
) -> None:
    """A channel down for longer than 24 h: the message expires with an error log."""
    smtp.stop()
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    for _ in range(120):
        harness.clock.advance(minutes=15)
        await deliver_due(harness.watcher.store, harness.watcher.notifier, harness.clock.now())

    expired = [line for line in log_lines() if line["event"] == "notify.expired"]
    assert [line["channel"] for line in expired] == ["finance"]
    assert expired[0]["title"].startswith("[WARNING] dial / wallet-low")
    assert await harness.watcher.store.pending_count() == 0


async def test_dry_run_plans_notifications_and_writes_nothing(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """A dry run reports what it would send; a real check afterwards still sends it."""
    harness.dial.account.balance_cents = 4000
    (report,) = await run_checks([harness.watcher], dry_run=True)
    assert [ch for ch, _ in report.notifications] == ["oncall", "finance"]
    assert await harness.watcher.store.pending_count() == 0
    assert await harness.watcher.store.alert_states("dial") == {}

    await check_and_deliver(harness)
    assert len(webhook.received) == 1


@pytest.mark.parametrize(
    ("change", "title"),
    [
        (
            {
                "subscription": {
                    "periodEnd": "2026-12-01T00:00:00Z",
                    "cancelAtPeriodEnd": True,
                    "quantity": 3,
                    "interval": "monthly",
                }
            },
            "[WARNING] dial / cancelling: subscription cancels at period end on "
            "2026-12-01 00:00 UTC (9 days left)",
        ),
        (
            {"balance_cents": -320, "numbers_release_at": "2026-12-05T12:00:00Z"},
            "[CRITICAL] dial / numbers-at-risk: numbers will be released on 2026-12-05 12:00 UTC "
            "(14 days left) unless the balance (-$3.20) is topped up",
        ),
        (
            {
                "payment_methods": [
                    {
                        "id": "pm_1",
                        "type": "card",
                        "brand": "visa",
                        "last4": "4242",
                        "expMonth": 11,
                        "expYear": 2026,
                        "isDefault": True,
                    }
                ]
            },
            "[WARNING] dial / card-expiring: default payment method visa ending 4242 expires "
            "11/2026 (9 days left)",
        ),
        (
            {"payment_methods": []},
            "[WARNING] dial / card-expiring: no payment method on file while 1 number(s) are "
            "pay-as-you-go",
        ),
    ],
    ids=["cancelling", "numbers-at-risk", "card-expiring", "no-payment-method"],
)
async def test_subscription_numbers_and_payment_rules_fire_with_dates(
    harness: Harness, webhook: WebhookReceiver, change: dict[str, Any], title: str
) -> None:
    """Each account-state rule fires with the date and the days left in its title."""
    for name, value in change.items():
        setattr(harness.dial.account, name, value)
    await check_and_deliver(harness)
    assert title in webhook.alert_titles


async def test_unknown_fields_and_enum_values_are_tolerated(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """New API fields, a new number mode and a new interval do not fail the check."""
    account = harness.dial.account
    account.numbers.append({"id": "n3", "number": "+15550001", "mode": "SHARED", "tags": []})
    assert account.subscription is not None
    account.subscription |= {"interval": "weekly", "trialEnd": None}
    account.balance_cents = 4000

    report = await check_and_deliver(harness)

    assert report.error is None
    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]


async def test_logs_of_failing_checks_and_sends_hold_no_secret(
    harness: Harness, smtp: SmtpServer, log_lines: Any
) -> None:
    """Auth failures and failed sends are logged in detail, without key or URL."""
    smtp.stop()
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    harness.dial.account.api_key = "sk_live_rotated"
    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)

    text = "\n".join(map(str, log_lines()))
    assert "notify.failed" in text
    assert "check.auth_failed" in text
    assert API_KEY not in text
    assert smtp.url not in text


async def test_checks_failing_longer_than_unhealthy_after_alert_then_resolve(
    harness: Harness, make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """Ten minutes of failed checks (across a restart) raise dialwatch's own alert."""
    harness.dial.faults.extend([Fault.server_error()] * 4 * 6)
    for _ in range(6):
        await check_and_deliver(harness)
        harness.clock.advance(minutes=1)
    assert webhook.received == []

    restarted = await make_harness(RULES)  # same state file: the failing streak is kept
    restarted.clock.current = harness.clock.now()
    restarted.dial.faults.extend([Fault.server_error(502)] * 4 * 5)
    for _ in range(5):
        await check_and_deliver(restarted)
        restarted.clock.advance(minutes=1)

    assert webhook.titles == [
        "[CRITICAL] dial / dialwatch-unhealthy: checks have failed for 10m (server_error)"
    ]
    assert "Failing since: 2026-11-21 12:00:00 UTC" in webhook.received[0]["message"]

    await check_and_deliver(restarted)
    assert webhook.titles[-1] == "[RESOLVED] dial / dialwatch-unhealthy: checks succeed again"


async def test_state_file_from_a_newer_dialwatch_is_refused(tmp_path: Path) -> None:
    """An older dialwatch will not misread a newer state file; it says what to do."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(ConfigError, match="state file is from a newer dialwatch"):
        await open_store(path)


async def test_max_repeats_stops_reminders_and_says_so_in_the_last(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """max_repeats: 1 sends the first alert and one reminder that says it is the last."""
    h = await make_harness(
        RULES.replace("  repeat_every: 4h\n", "  repeat_every: 1h\n  max_repeats: 1\n")
    )
    h.dial.account.balance_cents = 4000
    for _ in range(5):
        await check_and_deliver(h)
        h.clock.advance(hours=1)

    titles = [t for t in webhook.titles if "wallet-low" in t]
    assert len(titles) == 2
    assert titles[1].startswith("[WARNING] still firing: dial / wallet-low")
    assert (
        "This is the last reminder (max_repeats: 1): no more until it resolves"
        in (webhook.received[1]["message"])
    )


async def test_silenced_alert_fires_quietly_and_is_announced_when_the_silence_ends(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """A 2h silence on wallet-low: nothing sent while it holds, one alert after it ends."""
    store = harness.watcher.store
    await store.add_silence("wallet-*", None, harness.clock.now() + timedelta(hours=2), "top-up Monday",
                      harness.clock.now())  # fmt: skip
    await store.add_silence("cancelling", "another-account", harness.clock.now() + timedelta(hours=9),
                      "not this account", harness.clock.now())  # fmt: skip
    harness.dial.account.balance_cents = 900
    assert harness.dial.account.subscription is not None
    harness.dial.account.subscription["cancelAtPeriodEnd"] = True
    report = await check_and_deliver(harness)

    assert [o.silenced_by for o in report.outcomes if o.spec.name.startswith("wallet")] == [1, 1]
    assert [o.state.status for o in report.firing if o.spec.name == "wallet-low"] == [Status.FIRING]
    assert [t.split(":")[0] for t in webhook.alert_titles] == ["[WARNING] dial / cancelling"]

    harness.clock.advance(hours=2)
    await check_and_deliver(harness)
    assert sorted(webhook.alert_titles[1:]) == [
        "[CRITICAL] dial / wallet-critical: wallet balance $9.00 is below $10.00",
        "[WARNING] dial / wallet-low: wallet balance $9.00 is below $50.00",
    ]


async def test_alert_that_resolves_during_its_silence_is_never_announced(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """Fired and cleared under a silence: neither the alert nor its resolution is sent."""
    now = harness.clock.now()
    await harness.watcher.store.add_silence(
        "wallet-low", "dial", now + timedelta(hours=1), "known", now
    )
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    harness.dial.account.balance_cents = 9000
    harness.clock.advance(minutes=30)
    await check_and_deliver(harness)
    harness.clock.advance(hours=1)
    await check_and_deliver(harness)
    assert webhook.received == []


async def test_firing_source_inhibits_targets_until_it_clears(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """numbers-at-risk firing keeps the wallet alerts quiet; when it clears, they speak."""
    h = await make_harness(
        RULES
        + "inhibit:\n"
        + "  - source: {{rule: numbers-at-risk}}\n"
        + "    target: {{kind: balance_below}}\n"
    )
    h.dial.account.balance_cents = -320
    h.dial.account.numbers_release_at = "2026-12-05T12:00:00Z"
    report = await check_and_deliver(h)

    inhibited = {o.spec.name: o.inhibited_by for o in report.outcomes if o.inhibited_by}
    assert inhibited == {"wallet-low": "numbers-at-risk", "wallet-critical": "numbers-at-risk"}
    assert [t.split(":")[0] for t in webhook.alert_titles] == ["[CRITICAL] dial / numbers-at-risk"]

    h.dial.account.numbers_release_at = None  # Dial no longer plans to release the numbers
    h.clock.advance(minutes=5)
    await check_and_deliver(h)
    assert sorted(t.split(":")[0] for t in webhook.alert_titles[1:]) == [
        "[CRITICAL] dial / wallet-critical",
        "[RESOLVED] dial / numbers-at-risk",
        "[WARNING] dial / wallet-low",
    ]


async def test_alerts_of_one_check_are_one_message_per_channel(
    harness: Harness, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """Three alerts at once: one grouped message on oncall, finance gets its single one."""
    harness.dial.account.balance_cents = 900
    assert harness.dial.account.subscription is not None
    harness.dial.account.subscription["cancelAtPeriodEnd"] = True
    await check_and_deliver(harness)

    assert webhook.titles == [
        "[CRITICAL] dial: 3 notifications (wallet-low, wallet-critical, cancelling)"
    ]
    assert webhook.received[0]["type"] == "failure"  # the most urgent part decides
    body = webhook.received[0]["message"]
    assert body.startswith("1. [WARNING] dial / wallet-low: wallet balance $9.00 is below $50.00\n")
    assert (
        "\n\n2. [CRITICAL] dial / wallet-critical: wallet balance $9.00 is below $10.00\n" in body
    )
    assert "\n\n3. [WARNING] dial / cancelling: subscription cancels" in body
    assert smtp.subjects == ["[WARNING] dial / wallet-low: wallet balance $9.00 is below $50.00"]


async def test_group_wait_gathers_alerts_of_later_checks_into_the_waiting_message(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """With group_wait 2m, an alert a minute later joins the first; one message at 2m."""
    h = await make_harness(
        RULES.replace("  repeat_every: 4h\n", "  repeat_every: 4h\n  group_wait: 2m\n")
    )
    h.dial.account.balance_cents = 4000
    await check_and_deliver(h)
    assert webhook.received == []  # waiting for company

    h.clock.advance(minutes=1)
    assert h.dial.account.subscription is not None
    h.dial.account.subscription["cancelAtPeriodEnd"] = True
    await check_and_deliver(h)
    assert webhook.received == []

    h.clock.advance(minutes=1)
    await check_and_deliver(h)
    assert webhook.titles == ["[WARNING] dial: 2 notifications (wallet-low, cancelling)"]


async def test_state_file_of_schema_1_is_migrated(tmp_path: Path) -> None:
    """An outbox from before grouping gains its parts column; its rows stay deliverable."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, alert TEXT NOT NULL, "
            "decision TEXT NOT NULL, channel TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, "
            "notify_type TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL, "
            "next_attempt_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, "
            "delivered_at TEXT, expired_at TEXT)"
        )
        db.execute(
            "INSERT INTO outbox (alert, decision, channel, title, body, notify_type, created_at, "
            "expires_at, next_attempt_at) VALUES ('dial/x', 'first', 'oncall', 'T', 'B', 'info', "
            "'2026-11-21T12:00:00.000000Z', '2026-11-22T12:00:00.000000Z', '2026-11-21T12:00:00.000000Z')"
        )
        db.execute("PRAGMA user_version=1")
    store = await open_store(path)
    due = await store.due(datetime(2026, 11, 21, 13, tzinfo=UTC))
    assert [(row.channel, row.message.title) for row in due] == [("oncall", "T")]
    await store.close()


ROUTED = """
channels:
  oncall: "{webhook}"
  finance: "{smtp}"
routes:
  - match: {{severity: critical}}
    notify: [finance]
    continue: true
  - notify: [oncall]
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
  - name: wallet-critical
    kind: balance_below
    threshold: "$10.00"
    severity: critical
  - name: cancelling
    kind: subscription_cancelling
    notify: [finance]
"""


async def test_routes_send_by_severity_and_rules_naming_notify_keep_their_channels(
    make_harness: MakeHarness, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """critical goes to finance and (continue) oncall; warning to oncall; own notify wins."""
    h = await make_harness(ROUTED)
    h.dial.account.balance_cents = 900
    assert h.dial.account.subscription is not None
    h.dial.account.subscription["cancelAtPeriodEnd"] = True
    await check_and_deliver(h)

    assert webhook.alert_titles == [
        "[WARNING] dial / wallet-low: wallet balance $9.00 is below $50.00",
        "[CRITICAL] dial / wallet-critical: wallet balance $9.00 is below $10.00",
    ]
    assert smtp.subjects == ["[CRITICAL] dial: 2 notifications (wallet-critical, cancelling)"]


async def test_delivered_notifications_are_forgotten_after_a_week(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """The outbox keeps what was sent for 7 days (the status page's list), then drops it."""
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    harness.dial.account.balance_cents = 9000
    harness.clock.advance(days=6)
    await check_and_deliver(harness)  # resolved: two notifications on each of two channels
    assert len(await harness.watcher.store.recent_notifications(10)) == 4

    harness.clock.advance(days=1, seconds=1)
    await check_and_deliver(harness)
    titles = [row.message.title for row in await harness.watcher.store.recent_notifications(10)]
    # The alert's rows (7 days old) are gone; the resolutions (1 day old) stay.
    assert titles == [webhook.titles[1]] * 2


async def test_an_announced_alert_silenced_afterwards_still_sends_its_resolution(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """Fired and announced, then silenced, then cleared: the channel that was told it
    fired is told it ended (so a paging incident closes), silence or not."""
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    now = harness.clock.now()
    await harness.watcher.store.add_silence("wallet-low", None, now + timedelta(days=1), "ok", now)
    harness.dial.account.balance_cents = 23500
    harness.clock.advance(minutes=1)
    await check_and_deliver(harness)
    assert webhook.titles[1:] == [
        "[RESOLVED] dial / wallet-low: wallet balance $235.00 is back above $50.00"
    ]


async def test_an_alert_whose_rule_was_removed_is_closed_and_says_why(
    harness: Harness, webhook: WebhookReceiver
) -> None:
    """wallet-low fires, then the rule leaves the rules file: the next check closes the
    alert (no stale "firing" on the page or in metrics) and tells the channel why."""
    harness.dial.account.balance_cents = 4000
    await check_and_deliver(harness)
    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    from dialwatch.rules.loading import load_rules

    text = harness.rules_path.read_text()
    start = text.index("  - name: wallet-low")
    harness.rules_path.write_text(text[:start] + text[text.index("  - name: wallet-critical") :])
    harness.watcher.rules = load_rules(harness.rules_path)
    harness.clock.advance(minutes=1)
    report = await check_and_deliver(harness)
    assert webhook.titles[1:] == [
        "[RESOLVED] dial / wallet-low: the rule no longer runs on this account "
        "(removed from the rules file, or renamed)"
    ]
    assert "wallet-low" not in await harness.watcher.store.alert_states("dial")
    assert [o.decision for o in report.outcomes if o.spec.name == "wallet-low"] == [
        Decision.RESOLVED
    ]


async def test_a_balance_too_large_to_store_is_a_bad_response_not_a_crash(
    harness: Harness, log_lines: Any
) -> None:
    """balanceCents of 10**19 (past any 64-bit integer) fails the check as a response off
    the contract, counted and shown like any failed read, instead of crashing it."""
    harness.dial.account.balance_cents = 10**19
    report = await run_cycle(harness.watcher)
    assert [e.reason for e in report.errors] == ["bad_response"]
    assert "balanceCents" in str(report.errors[0])
    assert harness.watcher.health.last_error is not None


async def test_a_check_that_fails_inside_dialwatch_counts_against_health(
    harness: Harness, webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, log_lines: Any
) -> None:
    """A bug in a check (here a provider's reader raising KeyError) is a failed check like
    any other: health and the status show it, and after unhealthy_after of them
    dialwatch-unhealthy fires; it resolves once checks succeed again."""

    async def broken(now: Any) -> Any:
        raise KeyError("balanceCents")

    with monkeypatch.context() as patch:
        patch.setattr(harness.watcher.source, "fetch_billing", broken)
        for _ in range(11):
            report = await check_and_deliver(harness)
            harness.clock.advance(minutes=1)
    assert [e.reason for e in report.errors] == ["internal"]
    assert harness.watcher.health.last_error == "internal: KeyError: 'balanceCents'"
    assert webhook.titles == [
        "[CRITICAL] dial / dialwatch-unhealthy: checks have failed for 10m (internal)"
    ]
    assert any(e["event"] == "check.crashed" and "exception" in e for e in log_lines())

    await check_and_deliver(harness)
    assert webhook.titles[-1] == "[RESOLVED] dial / dialwatch-unhealthy: checks succeed again"
