"""When the state store cannot be reached: say so once per outage (not every second),
tell the readiness probe, and alert directly after a while, since the outbox that
alerts normally go through is in the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from dialwatch.delivery.messages import NOTIFY_TYPE, Message
from dialwatch.units import format_duration

log = structlog.get_logger("dialwatch.state")


@dataclass
class StateHealth:
    """Whether the store serves this replica. Each loop (the leases, delivery, each
    account's checks) reports its own calls: the outage ends when none of them fails,
    not when one succeeds, so a store that serves some calls and not others (a damaged
    page, a disk with room for small writes only) is one outage, not a flapping one."""

    since: datetime | None = None  # when the current outage began; None: reachable
    error: str | None = None
    alerted: bool = False  # the direct alert went out during this outage
    posted_at: datetime | None = None  # when it was last posted to Alertmanager channels
    failing: set[str] = field(default_factory=set)  # the loops whose last call failed

    def failed(self, now: datetime, error: str, replica: str, source: str) -> None:
        self.failing.add(source)
        if self.since is None:
            self.since = now
            log.error("state.unavailable", error=error, replica=replica, retry="with backoff")
        self.error = error

    def recovered(self, now: datetime, source: str) -> bool:
        """`source` was served (or stopped asking). True when that ends the outage
        (logged once)."""
        self.failing.discard(source)
        if self.since is None or self.failing:
            return False
        log.info("state.available", down_for=format_duration(now - self.since))
        self.since, self.error = None, None
        return True

    def down_for(self, now: datetime) -> timedelta:
        return now - self.since if self.since else timedelta(0)


def state_alert(
    replica: str, where: str, firing: bool, since: datetime | None, now: datetime
) -> Message:
    """dialwatch-unhealthy, sent by one replica straight to the channels."""
    began = (since or now).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if not firing:
        title = f"[RESOLVED] {replica} / dialwatch-unhealthy: the state store is reachable again"
        return Message(
            title, f"The state store {where} answers again.\nReplica: {replica}", "success"
        )
    summary = f"the state store has been unreachable for {format_duration(now - (since or now))}"
    body = "\n".join(
        (
            summary[:1].upper() + summary[1:] + ".",
            "",
            f"Replica: {replica}",
            f"State store: {where}",
            f"Unreachable since: {began}",
            "Meanwhile: no check can be recorded and no queued notification can be sent",
        )
    )
    return Message(
        f"[CRITICAL] {replica} / dialwatch-unhealthy: {summary}", body, NOTIFY_TYPE["critical"]
    )
