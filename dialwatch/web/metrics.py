"""Prometheus metrics. Labels are account, rule and channel names only: never a secret."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dialwatch.alerting.lifecycle import Decision, Status
from dialwatch.delivery.outbox import DeliveryReport
from dialwatch.pipeline.cycle import CycleReport
from dialwatch.store import Store


class Metrics:
    """One registry per service, so tests and embedders never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.balance = Gauge(
            "dialwatch_balance_cents", "Balance, in minor units (cents; credits for SMS credits)",
            ["account", "currency"], registry=r,
        )  # fmt: skip
        self.spend = Gauge(
            "dialwatch_spend_cents", "Spend counted by each spend_above rule, in cents",
            ["account", "rule"], registry=r,
        )  # fmt: skip
        self.quota_used = Gauge(
            "dialwatch_quota_used", "Messages used this period (HookBridge)", ["account"],
            registry=r,
        )  # fmt: skip
        self.quota_limit = Gauge(
            "dialwatch_quota_limit", "The plan's limit this period; absent when unlimited",
            ["account"], registry=r,
        )  # fmt: skip
        self.checks = Counter("dialwatch_checks", "Checks run", ["account"], registry=r)
        self.failures = Counter(
            "dialwatch_check_failures", "Failed checks, by reason (transport, server_error, "
            "rate_limited, auth, rejected, bad_response)", ["account", "reason"], registry=r,
        )  # fmt: skip
        self.last_success = Gauge(
            "dialwatch_last_success_timestamp_seconds", "When a check last succeeded",
            ["account"], registry=r,
        )  # fmt: skip
        self.api_latency = Histogram(
            "dialwatch_api_request_seconds", "Billing API request latency, by path",
            ["path"], registry=r,
        )  # fmt: skip
        self.sent = Counter(
            "dialwatch_notifications_sent", "Notifications delivered", ["channel"], registry=r
        )
        self.failed = Counter(
            "dialwatch_notifications_failed", "Failed delivery attempts", ["channel"], registry=r
        )
        self.expired = Counter(
            "dialwatch_notifications_expired", "Notifications given up on", ["channel"], registry=r
        )
        self.pending = Gauge(
            "dialwatch_notifications_pending", "Undelivered notifications in the outbox",
            ["channel"], registry=r,
        )  # fmt: skip
        self.lease_held = Gauge(
            "dialwatch_lease_held", "1 for each account whose lease this replica holds",
            ["account"], registry=r,
        )  # fmt: skip
        self.replica_info = Gauge(
            "dialwatch_replica_info", "This replica's name, as the value 1", ["replica"],
            registry=r,
        )  # fmt: skip
        self.alert_state = Gauge(
            "dialwatch_alert_state", "1 for the state each alert is in, 0 for the others",
            ["account", "rule", "state"], registry=r,
        )  # fmt: skip

    def observe_api(self, path: str, seconds: float) -> None:
        self.api_latency.labels(path).observe(seconds)

    def observe_cycle(self, report: CycleReport, account: str) -> None:
        self.checks.labels(account).inc()
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
            for status in Status:
                value = 1 if outcome.state.status is status else 0
                self.alert_state.labels(account, outcome.spec.name, status.value).set(value)

    def observe_leases(self, replica: str, held: set[str], accounts: list[str]) -> None:
        self.replica_info.labels(replica).set(1)
        for account in accounts:
            self.lease_held.labels(account).set(1 if account in held else 0)

    def observe_delivery(self, report: DeliveryReport) -> None:
        for row in report.delivered:
            self.sent.labels(row.channel).inc()
        for row, _ in report.failed:
            self.failed.labels(row.channel).inc()
        for row in report.expired:
            self.expired.labels(row.channel).inc()

    async def render(self, store: Store, channels: list[str]) -> bytes:
        """The exposition text, with the outbox gauge read fresh from the store."""
        pending = await store.pending_by_channel()
        for channel in channels:
            self.pending.labels(channel).set(pending.get(channel, 0))
        return generate_latest(self.registry)
