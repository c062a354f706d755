"""Sending one message to one channel through apprise.

Messages are text all the way here (dialwatch's own and the templates' output alike);
a channel whose `format` is html gets that text escaped and laid out as HTML, so no
provider's text (a description, a fare name) can become markup in someone's inbox."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Protocol

import apprise

from dialwatch.clock import Clock
from dialwatch.delivery.alertmanager import AlertmanagerNotifier
from dialwatch.delivery.messages import Message, Part
from dialwatch.logs import REDACTOR
from dialwatch.rules.schema import AlertmanagerChannel, AnyChannel, Channel


class Notifier(Protocol):
    async def send(self, channel: str, message: Message, parts: Sequence[Part] = ()) -> str | None:
        """Deliver `message` (made of `parts`, when it comes from the outbox); None on
        success, else why it failed (no secrets)."""
        ...


class ChannelNotifier:
    """Every channel of a rules file: Alertmanager channels post to its API, the others
    go through apprise."""

    def __init__(
        self,
        channels: Mapping[str, AnyChannel],
        clock: Clock,
        timeout: float = 30.0,
        min_interval: float | None = None,
    ) -> None:
        self._all = dict(channels)
        self._clock = clock
        self._apprise = AppriseNotifier(channels, timeout, min_interval)
        self._alertmanager = AlertmanagerNotifier(
            {n: c for n, c in channels.items() if isinstance(c, AlertmanagerChannel)}, clock
        )

    def with_channels(self, channels: Mapping[str, AnyChannel]) -> ChannelNotifier:
        """The same notifier for another set of channels (after a reload)."""
        return ChannelNotifier(
            channels, self._clock, self._apprise.timeout, self._apprise.min_interval
        )

    @property
    def channels(self) -> list[str]:
        """The channels' names, as `send` takes them."""
        return list(self._all)

    async def send(self, channel: str, message: Message, parts: Sequence[Part] = ()) -> str | None:
        """`channel` is a channel's name (to an Alertmanager channel: every URL of it),
        or one URL's key of an Alertmanager channel, as the outbox queues them."""
        spec = self._all.get(channel)
        if isinstance(spec, AlertmanagerChannel):
            errors = [
                error
                for key in spec.delivery_keys(channel)
                if (error := await self._alertmanager.send(key, message, parts)) is not None
            ]
            return "; ".join(errors) or None
        if self._alertmanager.handles(channel):
            return await self._alertmanager.send(channel, message, parts)
        return await self._apprise.send(channel, message, parts)

    def as_sent(self, channel: str, message: Message) -> Message:
        """What `channel` would receive (an Alertmanager gets the alerts as written)."""
        return self._apprise.as_sent(channel, message)


class AppriseNotifier:
    """One apprise object per channel, so each channel succeeds or fails on its own
    (the apprise channels of those given)."""

    def __init__(
        self,
        channels: Mapping[str, AnyChannel],
        timeout: float = 30.0,
        min_interval: float | None = None,
    ) -> None:
        """`min_interval` overrides apprise's pause between two sends to one service
        (5.5 s for most); None keeps apprise's own, which protects chat rate limits."""
        self.timeout = timeout
        self.min_interval = min_interval
        self._channels: dict[str, apprise.Apprise] = {}
        apprise_channels = {n: c for n, c in channels.items() if isinstance(c, Channel)}
        self._formats = {name: channel.body_format for name, channel in apprise_channels.items()}
        for name, channel in apprise_channels.items():
            url = channel.url.get_secret_value()
            REDACTOR.add_url(url)
            target = apprise.Apprise()
            target.add(url)
            if min_interval is not None:
                for service in target:
                    service.request_rate_per_sec = min_interval
            self._channels[name] = target

    def as_sent(self, channel: str, message: Message) -> Message:
        """`message` as `channel`'s service gets it: trimmed to its limits, laid out as
        HTML for a `format: html` channel."""
        target = self._channels.get(channel)
        if target is None:
            return message
        body_limit = min((s.body_maxlen for s in target), default=0) or len(message.body)
        title_limit = min((s.title_maxlen for s in target), default=0)
        body = trim(message.body, body_limit)
        return message._replace(
            body=as_html(body) if self._formats.get(channel) == "html" else body,
            # A service without titles (limit 0) gets the title folded into the body by apprise.
            title=trim(message.title, title_limit) if title_limit else message.title,
        )

    async def send(self, channel: str, message: Message, parts: Sequence[Part] = ()) -> str | None:
        target = self._channels.get(channel)
        if target is None:
            return f"no channel named {channel!r}"
        sent = self.as_sent(channel, message)
        result = await target.async_notify(
            body=sent.body,
            title=sent.title,
            notify_type=message.notify_type,
            body_format=self._formats.get(channel, "text"),
            timeout=self.timeout,
        )
        if result:
            return None
        problems = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
        reason = problems[-1] if problems else f"apprise reported {result.status.name}"
        return REDACTOR.redact(reason)


def as_html(text: str) -> str:
    """Text as HTML: every character escaped, blank-line-separated paragraphs as <p>,
    the lines inside them kept with <br>."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.splitlines()) + "</p>"
        for p in paragraphs
    )


TRIMMED = " […]"


def trim(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying so, rather than refused by the service."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRIMMED))] + TRIMMED
