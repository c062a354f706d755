"""Notification text: what a person needs to act, in the title and the first lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from dialwatch.alerting.decide import AlertSpec
from dialwatch.alerting.lifecycle import AlertState, Decision
from dialwatch.rules.evaluate import Finding
from dialwatch.units import format_duration

# apprise's notify types, by severity; a resolved notice is a success.
NOTIFY_TYPE = {"info": "info", "warning": "warning", "critical": "failure"}


class Message(NamedTuple):
    """A notification's text, and apprise's notify type (info, warning, failure, success)."""

    title: str
    body: str
    notify_type: str


class Part(NamedTuple):
    """One alert's message inside an outbox row (a group has several). `episode` names
    the firing it is about (when it began), so a resolution is matched to the firing
    it ends; None for events, and for parts written before episodes were kept."""

    alert: str
    decision: str
    message: Message
    episode: str | None = None


def compose(
    account: str,
    spec: AlertSpec,
    finding: Finding,
    decision: Decision,
    state: AlertState,
    now: datetime,
) -> Message:
    """The notification for `decision` (FIRST, REPEAT or RESOLVED)."""
    severity = spec.severity.upper()
    if decision is Decision.RESOLVED:
        tag, notify_type = "[RESOLVED]", "success"
    elif decision is Decision.REPEAT:
        tag, notify_type = f"[{severity}] still firing:", NOTIFY_TYPE[spec.severity]
    else:
        tag, notify_type = f"[{severity}]", NOTIFY_TYPE[spec.severity]
    title = f"{tag} {account} / {spec.name}: {finding.summary}"
    lines = [
        _sentence(finding.summary),
        "",
        f"Account: {account}",
        f"Rule: {spec.name} ({spec.kind})",
        f"Severity: {spec.severity}",
        *(f"{label}: {value}" for label, value in finding.facts),
    ]
    if decision is Decision.RESOLVED:
        lines.append(f"Resolved at: {_when(now)}")
    elif state.active_since is not None:
        lines.append(f"Firing since: {_when(state.active_since)}")
    reminders = state.notifications - 1
    if decision is Decision.REPEAT:
        lines.append(f"Reminder: {reminders}")
    if decision is not Decision.RESOLVED:
        if spec.repeat_every is None:
            lines.append("Reminders: none (repeat_every: never)")
        elif spec.max_repeats is not None and reminders >= spec.max_repeats:
            lines.append(
                f"This is the last reminder (max_repeats: {spec.max_repeats}): no more until "
                "it resolves"
            )
        else:
            lines.append(f"Next reminder: in {format_duration(spec.repeat_every)} if still firing")
    return Message(title, "\n".join(lines), notify_type)


def compose_event(
    account: str, spec: AlertSpec, summary: str, lines: list[str], more: int
) -> Message:
    """One grouped message for the new ledger items that matched an item rule."""
    body = [
        _sentence(summary),
        "",
        f"Account: {account}",
        f"Rule: {spec.name} ({spec.kind})",
        f"Severity: {spec.severity}",
        "Items:",
        *(f"  {line}" for line in lines),
    ]
    if more:
        body.append(f"  ... and {more} more")
    return Message(
        f"[{spec.severity.upper()}] {account} / {spec.name}: {summary}",
        "\n".join(body),
        NOTIFY_TYPE[spec.severity],
    )


# A group takes the most urgent notify type of its parts, and the matching label.
_URGENCY = {"failure": ("CRITICAL", 3), "warning": ("WARNING", 2), "info": ("INFO", 1),
            "success": ("RESOLVED", 0)}  # fmt: skip


def combine(account: str, parts: list[tuple[str, Message]]) -> Message:
    """One message for several (alert, message) parts bound for the same channel."""
    if len(parts) == 1:
        return parts[0][1]
    notify_type = max((m.notify_type for _, m in parts), key=lambda t: _URGENCY[t][1])
    rules = ", ".join(alert.rsplit("/", 1)[-1] for alert, _ in parts)
    title = f"[{_URGENCY[notify_type][0]}] {account}: {len(parts)} notifications ({rules})"
    body = "\n\n".join(f"{i}. {m.title}\n{m.body}" for i, (_, m) in enumerate(parts, 1))
    return Message(title, body, notify_type)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
