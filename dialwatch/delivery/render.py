"""Rendering decided alerts into messages: the default text, then the templates of the
rule and of each channel, over the fields its kind provides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from dialwatch.alerting.decide import AlertSpec, Decided
from dialwatch.alerting.lifecycle import AlertState, Decision
from dialwatch.alerting.quiet_hours import quiet_until
from dialwatch.delivery.messages import Message, compose, compose_event
from dialwatch.delivery.outbox import OutboxEntry
from dialwatch.rules import templates
from dialwatch.rules.evaluate import Finding
from dialwatch.rules.schema import Channel

log = structlog.get_logger("dialwatch.delivery")


@dataclass(frozen=True)
class Outcome(Decided):
    """A decided alert with its message (None: nothing to send) and template fields."""

    message: Message | None = None
    context: dict[str, Any] = field(default_factory=dict)  # what templates see


def render(account: str, decided: Decided, now: datetime) -> Outcome:
    """`decided` with the message its decision sends (none for NONE)."""
    if decided.decision is Decision.NONE:
        return Outcome(**vars(decided))
    spec, shown = decided.spec, decided.shown
    message = compose(account, spec, decided.finding, decided.decision, shown, now)
    fields = context(
        account,
        spec,
        decided.decision.value,
        decided.finding.summary,
        decided.finding.facts,
        since=shown.active_since.isoformat() if shown.active_since else "",
        reminder=max(0, shown.notifications - 1),
    )
    message = apply_templates(message, spec.title_template, spec.body_template, fields)
    return Outcome(**vars(decided), message=message, context=fields)


def render_event(
    account: str,
    spec: AlertSpec,
    summary: str,
    lines: list[str],
    more: int,
    silenced_by: int | None,
    **fields: Any,
) -> Outcome:
    """The grouped message for new ledger items an item rule matched (none if silenced:
    the items are then let go, not saved up for later)."""
    values = context(account, spec, Decision.EVENT.value, summary, **fields)
    message = None
    if silenced_by is None:
        message = compose_event(account, spec, summary, lines, more)
        message = apply_templates(message, spec.title_template, spec.body_template, values)
    finding = Finding(True, summary)
    return Outcome(
        spec, finding, AlertState(), Decision.EVENT, silenced_by=silenced_by, message=message,
        context=values,
    )  # fmt: skip


def for_channel(
    channels: Mapping[str, Channel], channel: str, message: Message, fields: dict[str, Any]
) -> Message:
    """`message` as `channel` gets it: rewritten by the channel's own templates."""
    spec = channels.get(channel)
    if spec is None:
        return message
    return apply_templates(message, spec.title, spec.body, fields)


def apply_templates(
    message: Message, title: str | None, body: str | None, fields: dict[str, Any]
) -> Message:
    """`message` rewritten by the templates given; the default text if rendering fails."""
    if title is None and body is None:
        return message
    values = {**fields, "title": message.title, "body": message.body}
    try:
        return message._replace(
            title=templates.render(title, values) if title is not None else message.title,
            body=templates.render(body, values) if body is not None else message.body,
        )
    except Exception as exc:  # validated at start; a render error must not cost the alert
        log.error("template.failed", rule=fields.get("rule"), error=str(exc))
        return message


def context(
    account: str,
    spec: AlertSpec,
    decision: str,
    summary: str,
    facts: tuple[tuple[str, str], ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """What a template for `spec` sees: the common fields, then its kind's fields from
    `facts` (and `extra`); a kind's field absent this time is ""."""
    values: dict[str, Any] = dict.fromkeys(templates.fields_for(spec.kind), "")
    values.update({templates.field_name(label): value for label, value in facts})
    values.update(
        account=account, rule=spec.name, kind=spec.kind, severity=spec.severity,
        decision=decision, summary=summary, since="", reminder=0,
    )  # fmt: skip
    values.update(extra)
    return values


def to_outbox(
    account: str,
    outcomes: Sequence[Outcome],
    channels: Mapping[str, Channel],
    now: datetime,
) -> list[OutboxEntry]:
    """Each message once per channel it is routed to, in that channel's templates, held
    until the end of the quiet hours that apply there."""
    return [
        OutboxEntry(
            f"{account}/{o.spec.name}",
            o.decision.value,
            target.channel,
            for_channel(channels, target.channel, o.message, o.context),
            quiet_until(target.quiet, now),
            o.shown.active_since,
        )
        for o in outcomes
        if o.message is not None
        for target in o.spec.targets
    ]
