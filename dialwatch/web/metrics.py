"""Prometheus metrics. Labels are account, rule and channel names only: never a secret.
Every metric is listed in the README with its labels; `deploy/prometheus` and
`deploy/grafana` use them, and a test evaluates every expression there against a real
Prometheus scraping a real service."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dialwatch.alerting.lifecycle import Decision, Status
from dialwatch.delivery.outbox import DeliveryReport
from dialwatch.errors import DialwatchError
from dialwatch.pipeline.cycle import CycleReport
from dialwatch.store import Store


class Series:
    """One metric's series as a plain dict, label values -> value, exposed by a
    collector at each scrape. A series costs a dict entry, not prometheus_client's child
    object with a lock of its own (about 1.5 KB): at 10,000 accounts and some 25 series
    each, those were most of the service's memory."""

    def __init__(self, kind: Literal["gauge", "counter"], name: str, doc: str,
                 labels: tuple[str, ...]) -> None:  # fmt: skip
        self.kind, self.name, self.doc, self.labels = kind, f"dialwatch_{name}", doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + 1

    def touch(self, *labels: str) -> None:
        """Show the series (0 for a counter until it counts: rate() and alerts see it)."""
        self.values.setdefault(labels, 0.0)

    def remove(self, *labels: str) -> None:
        self.values.pop(labels, None)

    def family(self) -> Metric:
        kind = GaugeMetricFamily if self.kind == "gauge" else CounterMetricFamily
        family = kind(self.name, self.doc, labels=self.labels)  # a counter gets _total
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class _Collector:
    def __init__(self, series: list[Series]) -> None:
        self._series = series

    def collect(self) -> Iterator[Metric]:
        return (s.family() for s in self._series)

    describe = collect  # the registry checks the names once, at registration


class Metrics:
    """One registry per service, so tests and embedders never share counters."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = r = CollectorRegistry()
        series: list[Series] = []

        def gauge(name: str, doc: str, *labels: str) -> Series:
            series.append(Series("gauge", name, doc, labels))
            return series[-1]

        def counter(name: str, doc: str, *labels: str) -> Series:
            series.append(Series("counter", name, doc, labels))
            return series[-1]

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
        self.api_latency = Histogram(  # a few paths: prometheus_client's own
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
        r.register(_Collector(series))
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

    def observe_api(self, path: str, seconds: float) -> None:
        self.api_latency.labels(path).observe(seconds)

    def observe_cycle(self, report: CycleReport, account: str, interval: float) -> None:
        self.checks.inc(account)
        self.interval.set(interval, account)
        self.last_check.set(report.now.timestamp(), account)
        self.check_success.set(0 if report.errors else 1, account)
        for error in report.errors:
            self.failures.inc(account, error.reason)
        if not report.errors:
            self.last_success.set(report.now.timestamp(), account)
        balance = report.snapshot.balance if report.snapshot else None
        if balance is not None:
            self.balance.set(balance.cents, account, balance.currency)
        quota = report.snapshot.quota if report.snapshot else None
        if quota is not None:
            self.quota_used.set(quota.used, account)
            if quota.plan_limit is not None:
                self.quota_limit.set(quota.plan_limit, account)
            else:
                self.quota_limit.remove(account)  # unlimited now: no limit to show
        for rule, spent in report.spend.items():
            self.spend.set(spent.cents, account, rule)
        for outcome in report.outcomes:
            if outcome.decision is Decision.EVENT:
                continue
            if outcome.spec.kind == "spend_anomaly":
                self.learning.set(int(outcome.finding.learning), account, outcome.spec.name)
            for status in Status:
                value = 1 if outcome.state.status is status else 0
                self.alert_state.set(value, account, outcome.spec.name, status.value)

    def observe_leases(self, replica: str, held: set[str], accounts: list[str]) -> None:
        self.replica_info.set(1, replica)
        for account in accounts:
            self.lease_held.set(1 if account in held else 0, account)
            if account not in held:
                self.check_success.remove(account)  # another replica checks it now

    def observe_state(self, up: bool) -> None:
        self.state_up.set(1 if up else 0)

    def observe_delivery(self, report: DeliveryReport) -> None:
        for row in report.delivered:
            self.sent.inc(row.channel)
        for row, _ in report.failed:
            self.failed.inc(row.channel)
        for row in report.expired:
            self.expired.inc(row.channel)

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
                counter.touch(channel)
            self.pending.set(pending.get(channel, 0), channel)
            since = waiting.get(channel)
            self.waiting.set((now - since).total_seconds() if since else 0, channel)
        return generate_latest(self.registry)
