"""`dialwatch demo`: the real service against the built-in simulated Dial API.

A scripted wallet drains past two thresholds, the subscription is set to cancel, and
a top-up brings everything back, so a newcomer sees firing and resolved notices.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import apprise.decorators
from pydantic import SecretStr

from dialwatch.config import parse_rules
from dialwatch.service import open_watcher, run_service
from dialwatch.settings import Settings
from dialwatch.simulator import DialAccount, DialSimulator

DEMO_KEY = "sk_demo_0000000000000000000000"


@dataclass(frozen=True)
class Scene:
    note: str
    balance_cents: int
    cancelling: bool = False


SCRIPT = (
    Scene("A healthy wallet: $80.00. Nothing fires.", 8000),
    Scene("A busy day: calls drain the wallet.", 6400),
    Scene("Still draining.", 5600),
    Scene("Under $50: wallet-low fires (warning).", 4700),
    Scene("Draining on; wallet-low already fired, so no repeat within repeat_every.", 3900),
    Scene("Someone schedules the subscription to cancel at period end.", 3100, cancelling=True),
    Scene("Under $20: wallet-critical fires too.", 1850, cancelling=True),
    Scene(
        "A wobble around $20 does not flap: still below the clear margin.", 2050, cancelling=True
    ),
    Scene("Top-up of $100 arrives; the cancellation is reverted.", 12050),
    Scene("All clear: resolved notices went out once. The demo ends.", 12050),
)


def _console_printer(out: TextIO) -> Any:
    @apprise.decorators.notify(on="console", name="dialwatch demo console")  # type: ignore[untyped-decorator,no-untyped-call]
    def console(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
        rule = "-" * 72
        out.write(f"\n{rule}\n  NOTIFICATION ({notify_type})\n  {title}\n{rule}\n")
        out.write("".join(f"  {line}\n" for line in body.splitlines()))
        out.write(f"{rule}\n\n")
        out.flush()
        return True

    return console


async def run_demo(
    out: TextIO = sys.stdout,
    scene_seconds: float = 2.5,
    interval: timedelta = timedelta(seconds=1),
) -> None:
    _console_printer(out)
    account = DialAccount(api_key=DEMO_KEY, balance_cents=SCRIPT[0].balance_cents)
    assert account.subscription is not None
    period_end = datetime.now(UTC) + timedelta(days=20, hours=1)
    account.subscription["periodEnd"] = period_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    simulator = DialSimulator(account)
    base_url = await simulator.start()
    text = resources.files("dialwatch").joinpath("demo_rules.yaml").read_text(encoding="utf-8")
    rules = parse_rules(text, "demo_rules.yaml", {})
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="dialwatch-demo-") as tmp:
        settings = Settings(
            api_key=SecretStr(DEMO_KEY),
            base_url=base_url,
            state=Path(tmp) / "demo.db",
        )
        out.write(
            f"dialwatch demo: simulated Dial API at {base_url}, checking every {interval.total_seconds():g}s.\n"
            f"Rules: {', '.join(r.name for r in rules.rules)}.\n\n"
        )
        try:
            async with open_watcher(settings, rules) as watcher:
                service = asyncio.create_task(run_service(watcher, interval, stop))
                for number, scene in enumerate(SCRIPT, 1):
                    account.balance_cents = scene.balance_cents
                    assert account.subscription is not None
                    account.subscription["cancelAtPeriodEnd"] = scene.cancelling
                    out.write(f"[{number}/{len(SCRIPT)}] {scene.note}\n")
                    out.flush()
                    await asyncio.sleep(scene_seconds)
                stop.set()
                await service
        finally:
            await simulator.stop()
    out.write(
        "Demo finished. Next: copy rules.example.yaml, set DIALWATCH_API_KEY, "
        "and run `dialwatch validate` then `dialwatch run`.\n"
    )
