"""`dialwatch` as users run it, a real process: its environment, one command run to its
end, and waiting for what another process does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import API_KEY
from tests.servers import free_port


@dataclass
class Ran:
    code: int
    out: str
    err: str


def service_env(base_url: str, rules: Path, state: Path) -> dict[str, str]:
    """The whole environment of a `dialwatch` process checking the Dial API at
    `base_url` every second, logging JSON, listening on a free port."""
    return {
        "PATH": os.environ["PATH"],
        "DIALWATCH_API_KEY": API_KEY,
        "DIALWATCH_BASE_URL": base_url,
        "DIALWATCH_RULES": str(rules),
        "DIALWATCH_STATE": str(state),
        "DIALWATCH_INTERVAL": "1s",
        "DIALWATCH_LOG_FORMAT": "json",
        "DIALWATCH_LISTEN": f"127.0.0.1:{free_port()}",
    }


async def dialwatch(*args: str, env: dict[str, str], cwd: Path | None = None) -> Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dialwatch",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait for another process to do something observable (never to pass time)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def wait_until_async(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    """wait_until for a condition that asks another process (over HTTP, say)."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


@dataclass
class Service:
    """One `dialwatch run` process and the JSON log lines it has written so far."""

    process: asyncio.subprocess.Process
    listen: str
    events: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, env: dict[str, str]) -> Service:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dialwatch", "run", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        service = cls(process, env["DIALWATCH_LISTEN"])
        service.reader = asyncio.create_task(service._read())
        return service

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    async def readyz(self) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{self.listen}/readyz") as response,
        ):
            return response.status

    async def kill(self) -> None:
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM; the service must exit 0 (a clean stop) whatever it went through."""
        self.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.process.wait(), 15) == 0
        assert self.reader is not None
        await self.reader
