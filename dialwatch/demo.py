"""`dialwatch demo`: the real service against the built-in simulated Dial API.

A scripted wallet drains past two thresholds, the subscription is set to cancel, a
looping agent makes a spend spike, and a top-up brings everything back, so a newcomer
sees firing, grouped and resolved notices.
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
from dialwatch.runner import open_watcher, run_service
from dialwatch.settings import Settings
from dialwatch.simulator import DialAccount, DialSimulator

DEMO_KEY = "sk_demo_0000000000000000000000"


@dataclass(frozen=True)
class Scene:
    note: str
    balance_cents: int
    cancelling: bool = False
    calls: int = 0  # usage items of $0.90 each
    big_calls: int = 0  # usage items of $3.50 each, over expensive-call's $2.00
    top_up_cents: int = 0


SCRIPT = (
    Scene("A healthy wallet: $80.00. Nothing fires.", 8000),
    Scene("A busy day: calls drain the wallet.", 6400, calls=5),
    Scene("Still draining.", 5600, calls=4),
    Scene("Under $50: wallet-low fires (warning).", 4700, calls=4),
    Scene("Draining on; wallet-low already fired, so no repeat within repeat_every.", 3900),
    Scene("Someone schedules the subscription to cancel at period end.", 3100, cancelling=True),
    Scene(
        "Under $20, and a spend spike: a looping agent places international calls. "
        "wallet-critical fires, expensive-call groups the calls into one message, and "
        "the hourly spend crosses $25.",
        1850,
        cancelling=True,
        big_calls=4,
    ),
    Scene(
        "A wobble around $20 does not flap: still below the clear margin.", 2050, cancelling=True
    ),
    Scene("Top-up of $100 arrives; the cancellation is reverted.", 12050, top_up_cents=10000),
    Scene("All clear: resolved notices went out once. The demo ends.", 12050),
)


def _ledger_items(scene: Scene, number: int) -> list[dict[str, Any]]:
    """The scene's activity, as Dial's ledger shows it."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    calls = [(90, "voice.outbound.minute", f"call_{number}_{i}") for i in range(scene.calls)]
    calls += [
        (350, "voice.international.minute", f"intl_{number}_{i}") for i in range(scene.big_calls)
    ]
    items: list[dict[str, Any]] = [
        {"type": "usage", "occurredAt": stamp, "amountCents": cents, "totalCents": cents,
         "fareName": fare, "number": "+14155550987", "billedQuantity": 1,
         "attribution": "wallet", "phoneNumberId": "num_2", "callId": call, "messageId": None}
        for cents, fare, call in calls
    ]  # fmt: skip
    if scene.top_up_cents:
        items.append({"type": "credit", "occurredAt": stamp, "amountCents": scene.top_up_cents,
                      "kind": "card", "invoiceId": f"in_demo{number}"})  # fmt: skip
    return items


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


async def _play(simulator: DialSimulator, out: TextIO, scene_seconds: float) -> None:
    account = simulator.account
    assert account.subscription is not None
    for number, scene in enumerate(SCRIPT, 1):
        simulator.ledger.extend(_ledger_items(scene, number))
        account.balance_cents = scene.balance_cents
        account.subscription["cancelAtPeriodEnd"] = scene.cancelling
        out.write(f"[{number}/{len(SCRIPT)}] {scene.note}\n")
        out.flush()
        await asyncio.sleep(scene_seconds)


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
            api_key=SecretStr(DEMO_KEY), base_url=base_url, state=Path(tmp) / "demo.db"
        )
        out.write(
            f"dialwatch demo: simulated Dial API at {base_url}, checking every "
            f"{interval.total_seconds():g}s.\nRules: {', '.join(r.name for r in rules.rules)}.\n\n"
        )
        try:
            async with open_watcher(settings, rules) as watcher:
                service = asyncio.create_task(run_service(watcher, interval, stop))
                try:
                    await _play(simulator, out, scene_seconds)
                finally:
                    stop.set()
                    await service
        finally:
            await simulator.stop()
    out.write(
        "Demo finished. Next: copy rules.example.yaml, set DIALWATCH_API_KEY, "
        "and run `dialwatch validate` then `dialwatch run`.\n"
    )
