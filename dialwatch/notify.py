"""Sending one message to one channel through apprise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import apprise
from pydantic import SecretStr

from dialwatch.logs import REDACTOR
from dialwatch.messages import Message


class Notifier(Protocol):
    async def send(self, channel: str, message: Message) -> str | None:
        """Deliver `message`; None on success, else why it failed (no secrets)."""
        ...


class AppriseNotifier:
    """One apprise object per channel, so each channel succeeds or fails on its own."""

    def __init__(
        self,
        channels: Mapping[str, SecretStr],
        timeout: float = 30.0,
        min_interval: float | None = None,
    ) -> None:
        """`min_interval` overrides apprise's pause between two sends to one service
        (5.5 s for most); None keeps apprise's own, which protects chat rate limits."""
        self._timeout = timeout
        self._min_interval = min_interval
        self._channels: dict[str, apprise.Apprise] = {}
        for name, url in channels.items():
            REDACTOR.add_url(url.get_secret_value())
            target = apprise.Apprise()
            target.add(url.get_secret_value())
            if min_interval is not None:
                for service in target:
                    service.request_rate_per_sec = min_interval
            self._channels[name] = target

    def with_channels(self, channels: Mapping[str, SecretStr]) -> AppriseNotifier:
        """The same notifier for another set of channels (after a reload)."""
        return AppriseNotifier(channels, self._timeout, self._min_interval)

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    async def send(self, channel: str, message: Message) -> str | None:
        target = self._channels.get(channel)
        if target is None:
            return f"no channel named {channel!r}"
        result = await target.async_notify(
            body=message.body,
            title=message.title,
            notify_type=message.notify_type,
            timeout=self._timeout,
        )
        if result:
            return None
        problems = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
        reason = problems[-1] if problems else f"apprise reported {result.status.name}"
        return REDACTOR.redact(reason)
