"""deploy/prometheus and deploy/grafana against the real programs: promtool checks and
unit-tests the rules; a real Prometheus scrapes a real `dialwatch run` and evaluates
every expression of the rules and the dashboard, so a renamed metric fails here."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dialwatch.simulators import Fault
from dialwatch.simulators.dial import DialSimulator
from dialwatch.simulators.hookbridge import HookBridgeSimulator
from dialwatch.simulators.mifumo import MifumoSimulator
from tests.conftest import API_KEY, HOOKBRIDGE_KEY, MIFUMO_KEY
from tests.ledger_items import usage
from tests.monitoring import get, get_text, prometheus, promtool, scrapes
from tests.processes import Service, service_env, wait_until
from tests.servers import WebhookReceiver

ROOT = Path(__file__).parent.parent
RULES_FILE = ROOT / "deploy" / "prometheus" / "dialwatch-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dialwatch.json"
README = ROOT / "README.md"
# Grafana's own variables, as Grafana would fill them in for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$account": ".*"}

SERVICE_RULES = """\
accounts:
  - {{name: dial, provider: dial, api_key: "{dial_key}", base_url: "{dial_url}"}}
  - {{name: sms, provider: mifumo, api_key: "{mifumo_key}", base_url: "{mifumo_url}"}}
  - {{name: hooks, provider: hookbridge, api_key: "{hookbridge_key}", base_url: "{hookbridge_url}"}}
channels:
  oncall: "{webhook}"
  broken: "{broken}"
defaults:
  notify: [oncall, broken]
rules:
  - {{name: wallet-low, kind: balance_below, threshold: "$50.00"}}
  - {{name: credits-low, kind: balance_below, threshold: 500 credits}}
  - {{name: quota-80, kind: quota_above, percent: 80}}
  - {{name: hourly-spend, kind: spend_above, window: 1h, amount: "$100.00", accounts: [dial]}}
"""


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = promtool("test", "rules", "dialwatch-rules.test.yml", cwd=RULES_FILE.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard (panels and the account variable), with Grafana's
    variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label): the metric's series
            metric = re.fullmatch(r"label_values\((\w+), \w+\)", variable["definition"])
            assert metric, variable["definition"]
            queries.append(metric[1])
    filled = []
    for query in queries:
        for name, value in GRAFANA_VARIABLES.items():
            query = query.replace(name, value)
        assert "$" not in query, f"a Grafana variable this test does not fill in: {query}"
        filled.append(query)
    return filled


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(dialwatch_[a-z_]+|up)\b(?=\s*[{\[)])", expression))


@pytest.fixture
async def broken() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(status=500)
    await receiver.start()
    yield receiver
    await receiver.stop()


async def query(prometheus_url: str, expression: str) -> dict[str, Any]:
    encoded = urllib.parse.quote(expression)
    status, body = await get(f"{prometheus_url}/api/v1/query?query={encoded}")
    assert body is not None, f"{expression}: HTTP {status}"
    return dict(body)


async def test_prometheus_scraping_dialwatch_answers_every_rule_and_dashboard_query(
    tmp_path: Path,
    dial: DialSimulator,
    mifumo: MifumoSimulator,
    hookbridge: HookBridgeSimulator,
    webhook: WebhookReceiver,
    broken: WebhookReceiver,
) -> None:
    dial.account.balance_cents = 4000
    now = datetime.now(UTC)
    dial.ledger.extend([usage(now.strftime("%Y-%m-%dT%H:%M:%S.000Z"), 1250)])
    dial.faults.extend([Fault.html()] * 4)  # the first check fails: failure counters exist
    mifumo.account.balance = 120
    hookbridge.account.month("2026-11-01", "2026-11-30", 4600, 5000)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        SERVICE_RULES.format(
            dial_key=API_KEY, dial_url=dial.base_url,
            mifumo_key=MIFUMO_KEY, mifumo_url=mifumo.base_url,
            hookbridge_key=HOOKBRIDGE_KEY, hookbridge_url=hookbridge.base_url,
            webhook=webhook.url, broken=broken.url,
        )
    )  # fmt: skip
    service = await Service.start(service_env(dial.base_url, rules, tmp_path / "state.db"))

    async def burn() -> None:
        """The wallet falls by a dollar a second: a burn rate and a runway to show."""
        while True:
            await asyncio.sleep(1)
            dial.account.balance_cents -= 100

    burning = asyncio.create_task(burn())
    try:
        await wait_until(lambda: bool(webhook.received), timeout=30)
        async with prometheus(tmp_path / "prometheus", service.listen, RULES_FILE) as url:
            await scrapes(url, 5)
            problems = []
            for expression in rule_expressions():
                answer = await query(url, expression)
                if answer["status"] != "success":
                    problems.append(f"rule {expression!r}: {answer.get('error')}")
                for metric in metric_names(expression):
                    series = (await query(url, metric))["data"]["result"]
                    if not series:
                        problems.append(f"rule {expression!r}: no series named {metric}")
            for expression in dashboard_expressions():
                answer = await query(url, expression)
                if answer["status"] != "success":
                    problems.append(f"dashboard {expression!r}: {answer.get('error')}")
                elif not answer["data"]["result"]:
                    problems.append(f"dashboard {expression!r}: no series")
            assert problems == []
            _, loaded = await get(f"{url}/api/v1/rules")
            assert len(loaded["data"]["groups"][0]["rules"]) == 8
    finally:
        burning.cancel()
        await service.stop()


async def test_the_metrics_pass_promtool_and_each_is_documented(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """/metrics follows Prometheus's naming (promtool check metrics says nothing), has no
    `_created` series, and every metric is in the README's metrics table."""
    dial.account.balance_cents = 4000
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f'channels: {{oncall: "{webhook.url}"}}\ndefaults: {{notify: [oncall]}}\n'
        'rules:\n  - {name: wallet-low, kind: balance_below, threshold: "$50.00"}\n'
    )
    service = await Service.start(service_env(dial.base_url, rules, tmp_path / "state.db"))
    try:
        await wait_until(lambda: bool(webhook.received), timeout=30)
        await wait_until(lambda: bool(service.logged("notify.sent")), timeout=30)
        _, text = await get_text(f"http://{service.listen}/metrics")
    finally:
        await service.stop()
    linted = promtool("check", "metrics", stdin=text)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert (linted.stdout + linted.stderr).strip() == ""
    assert "_created" not in text
    names = set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
    documented = README.read_text()
    assert {name for name in names if f"`{name}" not in documented} == set()
