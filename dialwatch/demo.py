"""`dialwatch demo`: the real service against built-in simulated Dial and Mifumo APIs.

A scripted Dial wallet drains past two thresholds, the subscription is set to cancel, a
looping agent makes a spend spike, and a top-up brings everything back; beside it, the
SMS credits at Mifumo run low until a bundle is bought. A newcomer sees firing, grouped
and resolved notices from two providers in one service.
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

from dialwatch.fleet import open_fleet
from dialwatch.rules.loading import parse_rules
from dialwatch.runner import run_service
from dialwatch.settings import Settings
from dialwatch.simulators.dial import DialAccount, DialSimulator
from dialwatch.simulators.mifumo import MifumoAccount, MifumoSimulator

DEMO_KEY = "sk_demo_0000000000000000000000"
MIFUMO_KEY = "mf_demo_0000000000000000000000"


@dataclass(frozen=True)
class Scene:
    note: str
    balance_cents: int
    cancelling: bool = False
    calls: int = 0  # usage items of $0.90 each
    big_calls: int = 0  # usage items of $3.50 each, over expensive-call's $2.00
    top_up_cents: int = 0
    sms_credits: int = 1200  # Mifumo SMS credits
    sms_bundle: int = 0  # credits bought (a $50.00 purchase)


SCRIPT = (
    Scene("A healthy wallet: $80.00. Nothing fires.", 8000),
    Scene(
        "A busy day: calls drain the wallet, SMS use the credits.", 6400, calls=5, sms_credits=900
    ),
    Scene("Still draining.", 5600, calls=4, sms_credits=700),
    Scene(
        "Under $50: wallet-low fires (warning); SMS credits under 500: sms-credits-low fires.",
        4700,
        calls=4,
        sms_credits=450,
    ),
    Scene(
        "Draining on; both already fired, so no repeat within repeat_every.",
        3900,
        sms_credits=300,
    ),
    Scene(
        "Someone schedules the subscription to cancel at period end; an SMS bundle is bought.",
        3100,
        cancelling=True,
        sms_credits=1300,
        sms_bundle=1000,
    ),
    Scene(
        "Under $20, and a spend spike: a looping agent places international calls. "
        "wallet-critical fires, expensive-call groups the calls into one message, and "
        "the hourly spend crosses $25.",
        1850,
        cancelling=True,
        big_calls=4,
        sms_credits=1300,
    ),
    Scene(
        "A wobble around $20 does not flap: still below the clear margin.",
        2050,
        cancelling=True,
        sms_credits=1300,
    ),
    Scene(
        "Top-up of $100 arrives; the cancellation is reverted.",
        12050,
        top_up_cents=10000,
        sms_credits=1300,
    ),
    Scene("All clear: resolved notices went out once. The demo ends.", 12050, sms_credits=1300),
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


async def _play(
    simulator: DialSimulator, sms: MifumoAccount, out: TextIO, scene_seconds: float
) -> None:
    account = simulator.account
    assert account.subscription is not None
    for number, scene in enumerate(SCRIPT, 1):
        simulator.ledger.extend(_ledger_items(scene, number))
        account.balance_cents = scene.balance_cents
        account.subscription["cancelAtPeriodEnd"] = scene.cancelling
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        used = sms.balance + scene.sms_bundle - scene.sms_credits
        if used > 0:  # at 3 cents a message; the API sends floats like -9.0
            sms.record(
                f"use{number}", "usage", -used * 3 / 100, now, f"SMS usage - {used} messages"
            )
        if scene.sms_bundle:
            sms.record(f"buy{number}", "purchase", 50.00, now, "Starter Package - 1000 SMS")
        sms.balance = scene.sms_credits
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
    sms = MifumoAccount(api_key=MIFUMO_KEY, balance=SCRIPT[0].sms_credits)
    mifumo = MifumoSimulator(sms)
    env = {
        "DEMO_DIAL_KEY": DEMO_KEY,
        "DEMO_DIAL_URL": await simulator.start(),
        "DEMO_MIFUMO_KEY": MIFUMO_KEY,
        "DEMO_MIFUMO_URL": await mifumo.start(),
    }
    text = resources.files("dialwatch").joinpath("demo_rules.yaml").read_text(encoding="utf-8")
    rules = parse_rules(text, "demo_rules.yaml", env)
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="dialwatch-demo-") as tmp:
        settings = Settings(state=Path(tmp) / "demo.db")
        out.write(
            f"dialwatch demo: simulated Dial API at {env['DEMO_DIAL_URL']} and Mifumo SMS "
            f"API at {env['DEMO_MIFUMO_URL']}, checking every {interval.total_seconds():g}s."
            f"\nRules: {', '.join(r.name for r in rules.rules)}.\n\n"
        )
        try:
            async with open_fleet(settings, rules, interval=interval) as fleet:
                service = asyncio.create_task(run_service(fleet, stop))
                try:
                    await _play(simulator, sms, out, scene_seconds)
                finally:
                    stop.set()
                    await service
        finally:
            await simulator.stop()
            await mifumo.stop()
    out.write(
        "Demo finished. Next: `dialwatch init --provider dial --channel slack` writes a "
        "rules file for your accounts; `dialwatch simulate` lets you try it without keys.\n"
    )
