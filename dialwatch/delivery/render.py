"""Rendering decided alerts into messages: the default text, then the templates of the
rule and of each channel, over the fields its kind provides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from dialwatch.alerting.decide import AlertSpec, Decided
from dialwatch.alerting.lifecycle import AlertState, Decision, Status
from dialwatch.alerting.quiet_hours import quiet_until
from dialwatch.alerting.routing import Target
from dialwatch.delivery.alertmanager import alert_message
from dialwatch.delivery.messages import Message, compose, compose_event
from dialwatch.delivery.outbox import REFRESH, OutboxEntry
from dialwatch.rules import templates
from dialwatch.rules.evaluate import Finding
from dialwatch.rules.schema import AlertmanagerChannel, AnyChannel, Channel

log = structlog.get_logger("dialwatch.delivery")


@dataclass(frozen=True)
class Outcome(Decided):
    """A decided alert with its message (None: nothing to send) and template fields."""

    message: Message | None = None
    context: dict[str, Any] = field(default_factory=dict)  # what templates see


def render(account: str, provider: str, decided: Decided, now: datetime) -> Outcome:
    """`decided` with the message its decision sends (none for NONE; the template
    fields of a firing alert are kept, for channels that hear of it at every check)."""
    spec, shown = decided.spec, decided.shown
    if decided.decision is Decision.NONE and decided.state.status is not Status.FIRING:
        return Outcome(**vars(decided))  # nothing is said of it
    fields = context(
        account,
        provider,
        spec,
        decided.decision.value,
        decided.finding.summary,
        decided.finding.facts,
        since=shown.active_since.isoformat() if shown.active_since else "",
        reminder=max(0, shown.notifications - 1),
    )
    if decided.decision is Decision.NONE:
        return Outcome(**vars(decided), context=fields)
    message = compose(account, spec, decided.finding, decided.decision, shown, now)
    message = apply_templates(message, spec.title_template, spec.body_template, fields)
    if spec.body_template is not None:
        fields["description"] = message.body
    return Outcome(**vars(decided), message=message, context=fields)


def render_event(
    account: str,
    provider: str,
    spec: AlertSpec,
    summary: str,
    lines: list[str],
    more: int,
    silenced_by: int | None,
    **fields: Any,
) -> Outcome:
    """The grouped message for new ledger items an item rule matched (none if silenced:
    the items are then let go, not saved up for later)."""
    values = context(account, provider, spec, Decision.EVENT.value, summary, **fields)
    message = None
    if silenced_by is None:
        message = compose_event(account, spec, summary, lines, more)
        message = apply_templates(message, spec.title_template, spec.body_template, values)
        values["description"] += "".join(f"\n{line}" for line in lines)
    finding = Finding(True, summary)
    return Outcome(
        spec, finding, AlertState(), Decision.EVENT, silenced_by=silenced_by, message=message,
        context=values,
    )  # fmt: skip


def for_channel(
    channels: Mapping[str, AnyChannel], channel: str, message: Message, fields: dict[str, Any]
) -> Message:
    """`message` as `channel` gets it: rewritten by the channel's own templates."""
    spec = channels.get(channel)
    if not isinstance(spec, Channel):
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
    provider: str,
    spec: AlertSpec,
    decision: str,
    summary: str,
    facts: tuple[tuple[str, str], ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """What a template for `spec` sees: the common fields, then its kind's fields from
    `facts` (and `extra`); a kind's field absent this time is "". `description` is the
    summary and the values, without the reminder lines of the default text."""
    values: dict[str, Any] = dict.fromkeys(templates.fields_for(spec.kind), "")
    values.update({templates.field_name(label): value for label, value in facts})
    description = "\n".join([summary[:1].upper() + summary[1:] + "."]
                            + [f"{label}: {value}" for label, value in facts])  # fmt: skip
    values.update(
        account=account, provider=provider, rule=spec.name, kind=spec.kind,
        severity=spec.severity, decision=decision, summary=summary, description=description,
        since="", reminder=0,
    )  # fmt: skip
    values.update(extra)
    return values


def to_outbox(
    account: str,
    outcomes: Sequence[Outcome],
    channels: Mapping[str, AnyChannel],
    now: datetime,
    valid_for: timedelta,
    status_page: str | None = None,
) -> list[OutboxEntry]:
    """Each message once per channel it is routed to, in that channel's templates, held
    until the end of the quiet hours that apply there. An Alertmanager channel gets each
    alert on its own, and a firing one at every check (see `delivery.alertmanager`)."""
    entries = []
    for o in outcomes:
        for target in o.spec.targets:
            channel = channels.get(target.channel)
            if isinstance(channel, AlertmanagerChannel):
                entries += _alertmanager_entries(
                    account, o, target, channel, now, valid_for, status_page
                )
            elif o.message is not None:
                entries.append(
                    OutboxEntry(
                        f"{account}/{o.spec.name}",
                        o.decision.value,
                        target.channel,
                        for_channel(channels, target.channel, o.message, o.context),
                        quiet_until(target.quiet, now),
                        o.shown.active_since,
                    )
                )
    return entries


def _alertmanager_entries(
    account: str,
    o: Outcome,
    target: Target,
    channel: AlertmanagerChannel,
    now: datetime,
    valid_for: timedelta,
    status_page: str | None,
) -> list[OutboxEntry]:
    """The post for one alert to each URL of `channel`. New alerts and events wait for
    the end of quiet hours; a firing alert's refresh and its resolution do not (one
    waiting behind a held first post is left out: that post carries the latest state)."""
    if not o.context:
        return []  # a digest: not an alert (validate refuses digests to Alertmanager)
    if o.decision is Decision.NONE:
        announced = o.state.status is Status.FIRING and o.state.last_notified is not None
        if not announced or o.silenced_by is not None or o.inhibited_by is not None:
            return []
        decision = REFRESH
    elif o.decision is Decision.REPEAT:
        decision = REFRESH
    elif o.message is None:
        return []  # a silenced event
    else:
        decision = o.decision.value
    held = decision in (Decision.FIRST.value, Decision.EVENT.value)
    try:
        message = alert_message(
            channel, decision, o.context, o.shown.active_since or now, now, valid_for, status_page
        )
    except Exception as exc:  # validated at start; a render error must not cost the alert
        log.error("template.failed", rule=o.spec.name, error=str(exc))
        plain = channel.model_copy(update={"summary": None, "description": None})
        message = alert_message(
            plain, decision, o.context, o.shown.active_since or now, now, valid_for, status_page
        )
    return [
        OutboxEntry(
            f"{account}/{o.spec.name}",
            decision,
            key,
            message,
            quiet_until(target.quiet, now) if held else None,
            o.shown.active_since,
            grouped=False,
        )
        for key in channel.delivery_keys(target.channel)
    ]
