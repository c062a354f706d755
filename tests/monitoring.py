"""The real Alertmanager and Prometheus (Debian's packages), started by tests on free
loopback ports with a data directory of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.servers import free_port

# Debian names the Alertmanager binary prometheus-alertmanager; upstream, alertmanager.
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")


def binary(names: tuple[str, ...], package: str) -> str:
    """The path of the first of `names` installed; skips the test (fails it in CI)
    where the Debian package is not installed."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{names[0]} is not installed (Debian package {package}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def get(url: str) -> tuple[int, Any]:
    """The status and the decoded JSON body (None if not JSON) of a GET."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, None


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


@contextlib.asynccontextmanager
async def started(args: list[str], ready_url: str, log: Path) -> AsyncIterator[None]:
    """Run `args` until the block ends, once `ready_url` answers 200."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=out)
    try:

        async def ready() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                return (await get(ready_url))[0] == 200
            return False

        async with asyncio.timeout(30):
            while not await ready():
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


@contextlib.asynccontextmanager
async def alertmanager(directory: Path, webhook_url: str) -> AsyncIterator[str]:
    """A real Alertmanager whose one receiver is `webhook_url` (resolved alerts too),
    grouping by account, flushing at once. Yields its base URL."""
    command = binary(ALERTMANAGER, "prometheus-alertmanager")
    config = {
        "route": {
            "receiver": "hook", "group_by": ["account"], "group_wait": "0s",
            "group_interval": "1s", "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }  # fmt: skip
    flags = ("--storage.path", "--cluster.listen-address=")  # no gossip: a cluster of one
    async with served(command, directory, config, *flags) as url:
        yield url


@contextlib.asynccontextmanager
async def prometheus(directory: Path, target: str, rules: Path) -> AsyncIterator[str]:
    """A real Prometheus scraping `target` (host:port) every second, with the alerting
    `rules` loaded. Yields its base URL."""
    command = binary(("prometheus",), "prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "dialwatch", "static_configs": [{"targets": [target]}]}],
    }
    async with served(command, directory, config, "--storage.tsdb.path") as url:
        yield url


@contextlib.asynccontextmanager
async def served(
    command: str, directory: Path, config: dict[str, Any], storage: str, *flags: str
) -> AsyncIterator[str]:
    """`command` (Prometheus or Alertmanager) with `config`, its data in `directory`,
    on a free loopback port, until the block ends. Yields its base URL."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    args = [
        command,
        f"--config.file={directory / 'config.yml'}",
        f"{storage}={directory / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        *flags,
    ]
    async with started(args, f"{url}/-/ready", directory / f"{Path(command).name}.log"):
        yield url


def promtool(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = binary(("promtool",), "prometheus")
    return subprocess.run(
        [command, *args], input=stdin, capture_output=True, text=True, check=False, cwd=cwd,
        timeout=60,
    )  # fmt: skip


async def scrapes(url: str, count: int) -> None:
    """Wait until Prometheus has scraped the dialwatch target `count` times."""

    async def seen() -> int:
        status, body = await get(f"{url}/api/v1/query?query=count_over_time(up[1h])")
        if status != 200 or not body["data"]["result"]:
            return 0
        return int(body["data"]["result"][0]["value"][1])

    async with asyncio.timeout(60):
        while await seen() < count:
            await asyncio.sleep(0.1)
