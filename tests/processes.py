"""`dialwatch` as users run it, a real process: its environment, one command run to its
end, and waiting for what another process does."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
