"""Alertmanager as a destination: alerts posted to its API v2 (`POST /api/v2/alerts`)
the way Prometheus posts them.

A firing alert is posted at every check with `endsAt` a few intervals ahead, so
Alertmanager resolves it by itself if dialwatch stops; a resolution is posted with
`endsAt` = when it resolved. What is posted is written into the outbox when the check
commits (`payload`), with the time-to-live rather than `endsAt` for a firing alert:
`endsAt` is set when the post is made, so a post that waited (quiet hours, an
Alertmanager that was down) never arrives already expired, and the order of one
channel's outbox keeps a resolution behind the posts it ends.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from dialwatch.alerting.lifecycle import Decision
from dialwatch.clock import Clock
from dialwatch.delivery.messages import Message, Part
from dialwatch.logs import REDACTOR
from dialwatch.rules import templates
from dialwatch.rules.schema import TLS, AlertmanagerChannel

API_PATH = "/api/v2/alerts"
# How long a post keeps an alert alive, in check intervals (as Prometheus: 4 x its
# evaluation interval): three checks may fail or be late before Alertmanager resolves it.
INTERVALS_VALID = 4
# Alerts dialwatch sends straight to the channels (the state store is down; a test)
# are posted again this often while they fire, and each post keeps them this long.
DIRECT_VALID = timedelta(minutes=15)
DIRECT_REPOST = timedelta(minutes=1)
_SEVERITY_OF = {"failure": "critical", "warning": "warning", "info": "info", "success": "info"}


def payload(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    starts_at: datetime,
    *,
    ends_at: datetime | None = None,
    valid_for: timedelta | None = None,
    generator_url: str | None = None,
) -> str:
    """One alert as stored in the outbox: Alertmanager's fields, with `validFor`
    (seconds) in place of `endsAt` for a firing alert."""
    alert: dict[str, Any] = {
        "labels": dict(labels),
        "annotations": {key: value for key, value in annotations.items() if value != ""},
        "startsAt": _iso(starts_at),
    }
    if ends_at is not None:
        alert["endsAt"] = _iso(ends_at)
    if valid_for is not None:
        alert["validFor"] = int(valid_for.total_seconds())
    if generator_url:
        alert["generatorURL"] = generator_url
    return json.dumps(alert, sort_keys=True)


def alert_message(
    channel: AlertmanagerChannel,
    decision: str,
    fields: dict[str, Any],
    started: datetime,
    now: datetime,
    valid_for: timedelta,
    status_page: str | None,
) -> Message:
    """The stored post for one alert routed to `channel`. `fields` are what templates
    see (`delivery.render.context`): the labels and the kind's values come from them."""
    summary, description = str(fields["summary"]), str(fields["description"])
    if channel.summary is not None:
        summary = templates.render(channel.summary, fields)
    if channel.description is not None:
        description = templates.render(channel.description, {**fields, "summary": summary})
    labels = {
        **channel.labels,
        "alertname": str(fields["rule"]),
        "account": str(fields["account"]),
        "provider": str(fields["provider"]),
        "kind": str(fields["kind"]),
        "severity": str(fields["severity"]),
    }
    timing: dict[str, Any]
    if decision == Decision.RESOLVED.value:
        timing = {"ends_at": now}
    elif decision == Decision.EVENT.value:
        # News, not a condition: its own alert, which ends by itself.
        labels["event_at"] = _iso(now)
        timing = {"ends_at": now + valid_for}
    else:
        timing = {"valid_for": valid_for}
    values_shown = {
        key: str(value)
        for key in templates.KIND_FIELDS.get(str(fields["kind"]), ())
        if (value := fields.get(key, "")) != ""
    }
    annotations = {**values_shown, "summary": summary, "description": description}
    link = f"{status_page}/#account-{fields['account']}" if status_page else None
    body = payload(labels, annotations, started, generator_url=link, **timing)
    notify_type = "success" if decision == Decision.RESOLVED.value else "info"
    return Message(f"{fields['account']} / {fields['rule']}: {summary}", body, notify_type)


def direct_alert(part: Part, now: datetime, extra: Mapping[str, str]) -> dict[str, Any]:
    """The alert for a message sent straight to the channel (not through the outbox):
    dialwatch's own state-store alert and `test-notify`, with the channel's `extra`
    labels."""
    name = part.alert.rsplit("/", 1)[-1]
    severity = _SEVERITY_OF.get(part.message.notify_type, "info")
    labels = {**extra, "alertname": name, "severity": severity}
    resolved = part.decision == Decision.RESOLVED.value
    return {
        "labels": labels,
        "annotations": {"summary": part.message.title, "description": part.message.body},
        "startsAt": _iso(now),
        "endsAt": _iso(now if resolved else now + DIRECT_VALID),
    }


def posted(part: Part, now: datetime, extra: Mapping[str, str]) -> dict[str, Any]:
    """What is posted for one outbox part: its stored alert, `endsAt` set from now."""
    try:
        alert: dict[str, Any] = json.loads(part.message.body)
    except json.JSONDecodeError:
        return direct_alert(part, now, extra)
    if not isinstance(alert, dict) or "labels" not in alert:
        return direct_alert(part, now, extra)
    valid_for = alert.pop("validFor", None)
    if valid_for is not None:
        alert["endsAt"] = _iso(now + timedelta(seconds=int(valid_for)))
    return alert


class AlertmanagerNotifier:
    """Posts to the Alertmanagers of the channels given. Each URL of a channel is its
    own delivery key (see `AlertmanagerChannel.delivery_keys`), so the outbox queues and
    retries each one on its own."""

    def __init__(self, channels: Mapping[str, AlertmanagerChannel], clock: Clock) -> None:
        self._clock = clock
        self._targets: dict[str, tuple[str, AlertmanagerChannel]] = {}
        for name, channel in channels.items():
            for key, url in zip(channel.delivery_keys(name), channel.alertmanager, strict=True):
                self._targets[key] = (url, channel)
            if channel.bearer_token is not None:
                REDACTOR.add(channel.bearer_token.get_secret_value())
            if channel.basic_auth is not None:
                REDACTOR.add(channel.basic_auth.password.get_secret_value())
        self._contexts: dict[TLS, ssl.SSLContext] = {}

    def handles(self, key: str) -> bool:
        return key in self._targets

    async def send(self, key: str, message: Message, parts: Sequence[Part] = ()) -> str | None:
        target = self._targets.get(key)
        if target is None:
            return f"no Alertmanager channel named {key!r}"
        url, channel = target
        now = self._clock.now()
        alerts = [posted(part, now, channel.labels) for part in parts] or [
            direct_alert(Part(key, "first", message), now, channel.labels)
        ]
        headers = {}
        if channel.bearer_token is not None:
            headers["Authorization"] = f"Bearer {channel.bearer_token.get_secret_value()}"
        auth = None
        if channel.basic_auth is not None:
            basic = channel.basic_auth
            auth = aiohttp.BasicAuth(basic.username, basic.password.get_secret_value())
        tls = await self._tls(channel.tls) if url.startswith("https:") else True
        timeout = aiohttp.ClientTimeout(total=channel.timeout.total_seconds())
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    url + API_PATH, json=alerts, headers=headers, auth=auth, ssl=tls
                ) as response,
            ):
                if response.status < 300:
                    return None
                text = (await response.text())[:300].strip()
                return REDACTOR.redact(
                    f"Alertmanager at {url} answered HTTP {response.status}: {text}"
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            return REDACTOR.redact(f"Alertmanager at {url} unreachable: {reason}")

    async def _tls(self, tls: TLS) -> ssl.SSLContext | bool:
        if tls.insecure_skip_verify and tls.cert_file is None:
            return False
        if tls == TLS():
            return True  # the system's trust store
        if tls not in self._contexts:
            self._contexts[tls] = await asyncio.to_thread(_context, tls)
        return self._contexts[tls]


def _context(tls: TLS) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
