"""`dialwatch simulate`: all four simulated APIs on loopback, each with an account that
has something to say (a low wallet with a day of calls, low SMS credits, a quota at
85%, a fresh Cloudflare charge), and the environment that points a rules file at them:
the variables `dialwatch init` files read."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from dialwatch.simulators import SimulatedApi
from dialwatch.simulators.cloudflare import CloudflareAccount, CloudflareSimulator
from dialwatch.simulators.dial import DialAccount, DialSimulator
from dialwatch.simulators.hookbridge import HookBridgeAccount, HookBridgeSimulator
from dialwatch.simulators.mifumo import MifumoAccount, MifumoSimulator

KEYS = {
    "dial": "sk_sim_dial_0000000000000000",
    "mifumo": "mf_sim_0000000000000000",
    "hookbridge": "hb_sim_0000000000000000",
    "cloudflare": "cf_sim_0000000000000000",
}
# The variables of each provider's key and address, as `dialwatch init` writes them.
KEY_VARIABLES = {
    "dial": "DIAL_API_KEY",
    "mifumo": "MIFUMO_API_KEY",
    "hookbridge": "HOOKBRIDGE_API_KEY",
    "cloudflare": "CF_API_TOKEN",
}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def simulators(now: datetime) -> dict[str, SimulatedApi]:
    """One simulator per provider, with a day of history up to `now`."""
    rng = random.Random(1)
    dial = DialAccount(api_key=KEYS["dial"], balance_cents=4_210)
    items = []
    for minute in range(0, 24 * 60, 7):
        cents = rng.randint(5, 90)
        items.append(
            {"type": "usage", "occurredAt": _stamp(now - timedelta(minutes=minute)),
             "amountCents": cents, "totalCents": cents, "fareName": "voice.outbound.minute",
             "number": "+14155550123", "billedQuantity": 1, "attribution": "wallet",
             "phoneNumberId": "pn_1", "callId": f"call_{minute}"}
        )  # fmt: skip
    dial_api = DialSimulator(dial)
    dial_api.ledger.extend(items)
    sms = MifumoAccount(api_key=KEYS["mifumo"], balance=420)
    sms.record("r1", "purchase", 50.0, _stamp(now - timedelta(days=3)), "SMS bundle")
    hooks = HookBridgeAccount(api_key=KEYS["hookbridge"])
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    hooks.month(first.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d"), 85_000, 100_000)
    cloudflare = CloudflareAccount(api_token=KEYS["cloudflare"])
    cloudflare.charge("ch_1", 25.0, _stamp(now - timedelta(hours=2)), description="Workers Paid")
    return {
        "dial": dial_api,
        "mifumo": MifumoSimulator(sms),
        "hookbridge": HookBridgeSimulator(hooks),
        "cloudflare": CloudflareSimulator(cloudflare),
    }


def environment(urls: dict[str, str]) -> list[tuple[str, str]]:
    """The variables that point rules files at the simulators: those of `dialwatch
    init`'s files, and DIALWATCH_API_KEY / DIALWATCH_BASE_URL for a file without an
    accounts section."""
    pairs = []
    for provider, url in urls.items():
        pairs += [(KEY_VARIABLES[provider], KEYS[provider]), (f"{provider.upper()}_BASE_URL", url)]
    return [*pairs, ("DIALWATCH_API_KEY", KEYS["dial"]), ("DIALWATCH_BASE_URL", urls["dial"])]
