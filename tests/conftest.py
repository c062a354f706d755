from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse

from dialwatch.delivery.notifier import AppriseNotifier
from dialwatch.delivery.outbox import deliver_due
from dialwatch.fleet import Fleet, open_fleet
from dialwatch.logs import configure_logging
from dialwatch.pipeline.cycle import CycleReport, Watcher
from dialwatch.providers.dial import DialProvider
from dialwatch.providers.http import ApiClient
from dialwatch.rules.loading import load_rules
from dialwatch.settings import Settings
from dialwatch.simulators.cloudflare import CloudflareAccount, CloudflareSimulator
from dialwatch.simulators.dial import DialAccount, DialSimulator
from dialwatch.simulators.hookbridge import HookBridgeAccount, HookBridgeSimulator
from dialwatch.simulators.mifumo import MifumoAccount, MifumoSimulator
from dialwatch.store import open_store
from dialwatch.web.metrics import Metrics
from tests.postgres import fresh_database, server_url
from tests.servers import SmtpServer, WebhookReceiver

API_KEY = "sk_live_TESTKEY0123456789abcdefSECRET"
START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@dataclass
class RecordingSleep:
    """Stands in for asyncio.sleep in retry loops: records the delay, waits for nothing."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(autouse=True)
def _no_dialwatch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the DIALWATCH_* variables they set themselves."""
    import os

    for name in list(os.environ):
        if name.startswith("DIALWATCH_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _aioresponses_on_current_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioresponses 0.7.9 builds ClientResponse without the `stream_writer` that aiohttp
    3.14 requires (pnuckowski/aioresponses#289); aiohttp reads only its output_size."""
    import aioresponses.core

    class CompatResponse(ClientResponse):
        def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
            super().__init__(method, url, **kwargs)

    monkeypatch.setattr(aioresponses.core, "ClientResponse", CompatResponse)


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Logs of the code under test, as parsed JSON lines."""
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    configure_logging("console", "warning", io.StringIO())


@pytest.fixture
async def dial() -> AsyncIterator[DialSimulator]:
    simulator = DialSimulator(DialAccount(api_key=API_KEY))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


RULES = """
channels:
  oncall: "{webhook}"
  finance: "{smtp}"
defaults:
  notify: [oncall]
  repeat_every: 4h
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
    severity: warning
    notify: [oncall, finance]
  - name: wallet-critical
    kind: balance_below
    threshold: "$10.00"
    severity: critical
  - name: cancelling
    kind: subscription_cancelling
  - name: numbers-at-risk
    kind: numbers_at_risk
  - name: card-expiring
    kind: payment_method_expiring
"""


@dataclass
class Harness:
    """A Watcher wired to real local servers, with an injected clock."""

    watcher: Watcher
    clock: FakeClock
    sleep: RecordingSleep
    dial: DialSimulator
    rules_path: Path
    metrics: Metrics


MakeHarness = Callable[[str], Awaitable[Harness]]


@pytest.fixture
async def make_harness(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver, smtp: SmtpServer
) -> AsyncIterator[MakeHarness]:
    """Builds a Harness for a rules text ({webhook} and {smtp} are filled in)."""
    stack = contextlib.AsyncExitStack()
    session = await stack.enter_async_context(aiohttp.ClientSession())

    async def make(rules_text: str) -> Harness:
        rules_path = tmp_path / "rules.yaml"
        rules_path.write_text(rules_text.format(webhook=webhook.url, smtp=smtp.url))
        rules = load_rules(rules_path)
        clock = FakeClock()
        sleep = RecordingSleep()
        store = await open_store(tmp_path / "state.db")
        stack.push_async_callback(store.close)
        metrics = Metrics()
        client = ApiClient(
            session,
            dial.base_url,
            {"Authorization": f"Bearer {API_KEY}"},
            sleep=sleep,
            observe=metrics.observe_api,
        )
        watcher = Watcher(
            metrics=metrics,
            rules=rules,
            source=DialProvider("dial", client),
            store=store,
            notifier=AppriseNotifier(rules.channels, timeout=10, min_interval=0),
            clock=clock,
        )
        return Harness(watcher, clock, sleep, dial, rules_path, metrics)

    async with stack:
        yield make


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness(RULES)


MIFUMO_KEY = "mf_TESTKEY0123456789abcdefSECRET"
HOOKBRIDGE_KEY = "hb_live_TESTKEY0123456789SECRET"
CLOUDFLARE_TOKEN = "cf_TOKEN0123456789abcdefSECRET"


@pytest.fixture
async def mifumo() -> AsyncIterator[MifumoSimulator]:
    simulator = MifumoSimulator(MifumoAccount(api_key=MIFUMO_KEY))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def hookbridge() -> AsyncIterator[HookBridgeSimulator]:
    simulator = HookBridgeSimulator(HookBridgeAccount(api_key=HOOKBRIDGE_KEY))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def cloudflare() -> AsyncIterator[CloudflareSimulator]:
    simulator = CloudflareSimulator(CloudflareAccount(api_token=CLOUDFLARE_TOKEN))
    await simulator.start()
    yield simulator
    await simulator.stop()


@dataclass
class FleetHarness:
    """A service of several accounts (`open_fleet`, as `dialwatch run` builds it) wired
    to local simulators, with an injected clock."""

    fleet: Fleet
    clock: FakeClock
    sleep: RecordingSleep
    env: dict[str, str]  # what ${VAR}s in the rules file stand for

    async def check(self) -> dict[str, CycleReport]:
        """Check every account once and deliver what that queued."""
        reports = await self.fleet.check()
        await deliver_due(self.fleet.store, self.fleet.notifier, self.clock.now())
        return dict(zip(self.fleet.watchers, reports, strict=True))


MakeFleet = Callable[[str], Awaitable[FleetHarness]]


@pytest.fixture
async def make_fleet(
    tmp_path: Path,
    webhook: WebhookReceiver,
    dial: DialSimulator,
    mifumo: MifumoSimulator,
    hookbridge: HookBridgeSimulator,
    cloudflare: CloudflareSimulator,
) -> AsyncIterator[MakeFleet]:
    """Builds a FleetHarness for a rules text; ${WEBHOOK}, ${DIAL_URL}, ${MIFUMO_URL},
    ${HOOKBRIDGE_URL}, ${CLOUDFLARE_URL} and the keys (${DIAL_KEY}, ...) are set."""
    env = {
        "WEBHOOK": webhook.url,
        "DIAL_URL": dial.base_url,
        "DIAL_KEY": API_KEY,
        "MIFUMO_URL": mifumo.base_url,
        "MIFUMO_KEY": MIFUMO_KEY,
        "HOOKBRIDGE_URL": hookbridge.base_url,
        "HOOKBRIDGE_KEY": HOOKBRIDGE_KEY,
        "CLOUDFLARE_URL": cloudflare.base_url,
        "CLOUDFLARE_TOKEN": CLOUDFLARE_TOKEN,
    }
    async with contextlib.AsyncExitStack() as stack:

        async def make(rules_text: str) -> FleetHarness:
            path = tmp_path / "rules.yaml"
            path.write_text(rules_text)
            rules = load_rules(path, env)
            clock, sleep = FakeClock(), RecordingSleep()
            fleet = await stack.enter_async_context(
                open_fleet(
                    Settings(state=tmp_path / "state.db"),
                    rules,
                    clock=clock,
                    notifier=AppriseNotifier(rules.channels, timeout=10, min_interval=0),
                    sleep=sleep,
                )
            )
            return FleetHarness(fleet, clock, sleep, env)

        yield make


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of the PostgreSQL server the tests use."""
    return server_url()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database for this test."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new state store of each backend: a SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    url: str = request.getfixturevalue("postgres_url")
    return url
