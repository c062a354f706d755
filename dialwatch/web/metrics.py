"""Prometheus metrics. Labels are account, rule and channel names only: never a secret.
Every metric is listed in the README with its labels; `deploy/prometheus` and
`deploy/grafana` use them, and a test evaluates every expression there against a real
Prometheus scraping a real service."""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from dialwatch.alerting.lifecycle import Decision, Status
from dialwatch.delivery.outbox import DeliveryReport
from dialwatch.errors import DialwatchError
from dialwatch.pipeline.cycle import CycleReport
from dialwatch.store import Store


class Metrics:
    """One registry per service, so tests and embedders never share counters."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = r = CollectorRegistry()

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(f"dialwatch_{name}", doc, labels, registry=r)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"dialwatch_{name}", doc, labels, registry=r)  # adds _total

        account, channel = "account", "channel"
        self.balance = gauge(
            "balance_cents", "Balance, in minor units (cents; credits for SMS credits)",
            account, "currency",
        )  # fmt: skip
        self.spend = gauge(
            "spend_cents", "Spend counted by each spend_above rule, in cents", account, "rule"
        )
        self.quota_used = gauge("quota_used", "Messages used this period (HookBridge)", account)
        self.quota_limit = gauge(
            "quota_limit", "The plan's limit this period; absent when unlimited", account
        )
        self.checks = counter("checks", "Checks run", account)
        self.failures = counter(
            "check_failures", "Failed checks, by reason (transport, server_error, "
            "rate_limited, auth, rejected, bad_response, internal)", account, "reason",
        )  # fmt: skip
        self.last_success = gauge(
            "last_success_timestamp_seconds", "When a check last succeeded", account
        )
        self.last_check = gauge(
            "last_check_timestamp_seconds", "When a check last finished", account
        )
        self.check_success = gauge(
            "check_success", "1 if the latest check of the account succeeded, else 0; only "
            "for accounts this replica checks", account,
        )  # fmt: skip
        self.interval = gauge("check_interval_seconds", "How often the account is checked", account)
        self.api_latency = Histogram(
            "dialwatch_api_request_duration_seconds", "Billing API request latency, by path",
            ["path"], registry=r,
        )  # fmt: skip
        self.sent = counter("notifications_sent", "Notifications delivered", channel)
        self.failed = counter("notifications_failed", "Failed delivery attempts", channel)
        self.expired = counter("notifications_expired", "Notifications given up on", channel)
        self.pending = gauge(
            "notifications_pending", "Undelivered notifications in the outbox", channel
        )
        self.waiting = gauge(
            "notifications_oldest_pending_age_seconds", "How long the channel's oldest "
            "undelivered notification has waited (not counting quiet hours); 0 when none "
            "waits", channel,
        )  # fmt: skip
        self.state_up = gauge(
            "state_store_up", "1 while the state store serves this replica, else 0"
        )
        self.state_up.set(1)
        self.lease_held = gauge(
            "lease_held", "1 for each account whose lease this replica holds", account
        )
        self.replica_info = gauge("replica_info", "This replica's name, as the value 1", "replica")
        self.learning = gauge(
            "rule_learning", "1 while a rule has too little history to judge (spend_anomaly)",
            account, "rule",
        )  # fmt: skip
        self.alert_state = gauge(
            "alert_state", "1 for the state each alert is in, 0 for the others",
            account, "rule", "state",
        )  # fmt: skip

        self._shown_state: dict[tuple[str, str], Status] = {}  # what alert_state says

    def observe_api(self, path: str, seconds: float) -> None:
        self.api_latency.labels(path).observe(seconds)

    def observe_cycle(self, report: CycleReport, account: str, interval: float) -> None:
        self.checks.labels(account).inc()
        self.interval.labels(account).set(interval)
        self.last_check.labels(account).set(report.now.timestamp())
        self.check_success.labels(account).set(0 if report.errors else 1)
        for error in report.errors:
            self.failures.labels(account, error.reason).inc()
        if not report.errors:
            self.last_success.labels(account).set(report.now.timestamp())
        balance = report.snapshot.balance if report.snapshot else None
        if balance is not None:
            self.balance.labels(account, balance.currency).set(balance.cents)
        quota = report.snapshot.quota if report.snapshot else None
        if quota is not None:
            self.quota_used.labels(account).set(quota.used)
            if quota.plan_limit is not None:
                self.quota_limit.labels(account).set(quota.plan_limit)
            else:
                with contextlib.suppress(KeyError):  # unlimited now: no limit to show
                    self.quota_limit.remove(account)
        for rule, spent in report.spend.items():
            self.spend.labels(account, rule).set(spent.cents)
        for outcome in report.outcomes:
            if outcome.decision is Decision.EVENT:
                continue
            if outcome.spec.kind == "spend_anomaly":
                self.learning.labels(account, outcome.spec.name).set(int(outcome.finding.learning))
            alert, now_in = (account, outcome.spec.name), outcome.state.status
            if self._shown_state.get(alert) is now_in:
                continue  # the series already say so: most checks change nothing
            self._shown_state[alert] = now_in
            for status in Status:
                value = 1 if now_in is status else 0
                self.alert_state.labels(*alert, status.value).set(value)

    def observe_leases(self, replica: str, held: set[str], accounts: list[str]) -> None:
        self.replica_info.labels(replica).set(1)
        for account in accounts:
            self.lease_held.labels(account).set(1 if account in held else 0)
            if account not in held:
                with contextlib.suppress(KeyError):  # another replica checks it now
                    self.check_success.remove(account)

    def observe_state(self, up: bool) -> None:
        self.state_up.set(1 if up else 0)

    def observe_delivery(self, report: DeliveryReport) -> None:
        for row in report.delivered:
            self.sent.labels(row.channel).inc()
        for row, _ in report.failed:
            self.failed.labels(row.channel).inc()
        for row in report.expired:
            self.expired.labels(row.channel).inc()

    async def render(self, store: Store, channels: list[str], now: datetime) -> bytes:
        """The exposition text, with the outbox gauges read fresh from the store (their
        last values while it cannot answer: the rest of the metrics say why)."""
        try:
            pending = await store.pending_by_channel()
            waiting = await store.waiting_since_by_channel()
        except DialwatchError:
            return generate_latest(self.registry)
        for channel in channels:
            for counter in (self.sent, self.failed, self.expired):
                counter.labels(channel)  # 0 until it happens: rate() and alerts see it
            self.pending.labels(channel).set(pending.get(channel, 0))
            since = waiting.get(channel)
            self.waiting.labels(channel).set((now - since).total_seconds() if since else 0)
        return generate_latest(self.registry)
