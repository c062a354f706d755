"""Sending one message to one channel through apprise.

Messages are text all the way here (dialwatch's own and the templates' output alike);
a channel whose `format` is html gets that text escaped and laid out as HTML, so no
provider's text (a description, a fare name) can become markup in someone's inbox."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Protocol

import apprise

from dialwatch.delivery.messages import Message
from dialwatch.logs import REDACTOR
from dialwatch.rules.schema import Channel


class Notifier(Protocol):
    async def send(self, channel: str, message: Message) -> str | None:
        """Deliver `message`; None on success, else why it failed (no secrets)."""
        ...


class AppriseNotifier:
    """One apprise object per channel, so each channel succeeds or fails on its own."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        timeout: float = 30.0,
        min_interval: float | None = None,
    ) -> None:
        """`min_interval` overrides apprise's pause between two sends to one service
        (5.5 s for most); None keeps apprise's own, which protects chat rate limits."""
        self._timeout = timeout
        self._min_interval = min_interval
        self._channels: dict[str, apprise.Apprise] = {}
        self._formats = {name: channel.body_format for name, channel in channels.items()}
        for name, channel in channels.items():
            url = channel.url.get_secret_value()
            REDACTOR.add_url(url)
            target = apprise.Apprise()
            target.add(url)
            if min_interval is not None:
                for service in target:
                    service.request_rate_per_sec = min_interval
            self._channels[name] = target

    def with_channels(self, channels: Mapping[str, Channel]) -> AppriseNotifier:
        """The same notifier for another set of channels (after a reload)."""
        return AppriseNotifier(channels, self._timeout, self._min_interval)

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    async def send(self, channel: str, message: Message) -> str | None:
        target = self._channels.get(channel)
        if target is None:
            return f"no channel named {channel!r}"
        body_limit = min((s.body_maxlen for s in target), default=0) or len(message.body)
        title_limit = min((s.title_maxlen for s in target), default=0)
        body_format = self._formats.get(channel, "text")
        body = trim(message.body, body_limit)
        result = await target.async_notify(
            body=as_html(body) if body_format == "html" else body,
            # A service without titles (limit 0) gets the title folded into the body by apprise.
            title=trim(message.title, title_limit) if title_limit else message.title,
            notify_type=message.notify_type,
            body_format=body_format,
            timeout=self._timeout,
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
