"""Real local peers for tests: a webhook receiver and an SMTP server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import aiohttp
from aiohttp import web
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebhookReceiver:
    """Accepts apprise json:// posts; `status` makes it fail on purpose."""

    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    # Called with each message as it arrives, before the answer (a test can kill the
    # sender right there: sent, but not yet known to be sent).
    on_receive: Callable[[dict[str, Any]], None] | None = None
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return web.Response(status=self.status, text="receiver failing on purpose")
        message = json.loads(await request.text())
        self.received.append(message)
        if self.on_receive is not None:
            self.on_receive(message)
        return web.Response(text="ok")

    @property
    def titles(self) -> list[str]:
        return [m["title"] for m in self.received]

    @property
    def alert_titles(self) -> list[str]:
        """Each alert's own title, reading a grouped message's numbered parts as a person would."""
        return [title for m in self.received for title in part_titles(m["title"], m["message"])]


def part_titles(title: str, body: str) -> list[str]:
    if not re.search(r": \d+ notifications \(", title):
        return [title]
    return re.findall(r"^\d+\. (\[.*)$", body, flags=re.MULTILINE)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


class SmtpServer:
    """A real SMTP server (aiosmtpd) that can be stopped and started on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = _Inbox()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return (
            f"mailto://127.0.0.1:{self.port}?from=dialwatch@example.com"
            "&to=finance@example.com&mode=insecure"
        )

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Message]:
        return self.inbox.messages

    @property
    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def bodies(self, content_type: str = "text/plain") -> list[str]:
        texts = []
        for message in self.messages:
            for part in message.walk():
                if part.get_content_type() == content_type:
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    texts.append(payload.decode())
        return texts

    def html_bodies(self) -> list[str]:
        return self.bodies("text/html")


async def get_json(
    url: str, headers: dict[str, str], params: dict[str, str] | None = None
) -> tuple[int, Any]:
    """GET `url` as a client of the simulated APIs would: the status and the JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params=params, headers=headers) as response,
    ):
        return response.status, await response.json()
