"""The first hour, as a newcomer takes it: `init`, errors a person can act on, a CLI that
explains itself, `simulate`, and the README's "Use it" commands run in order in a fresh
venv against the simulators."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import venv
from pathlib import Path

import pytest

from dialwatch.cli import _parser
from dialwatch.rules.starter import CHANNEL_KINDS, PROVIDERS, example
from dialwatch.simulators.dial import DialSimulator
from tests.processes import Ran, dialwatch, service_env, wait_until
from tests.servers import WebhookReceiver, free_port

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
# What each variable `init` names might be set to by a user (valid for its kind).
VALUES = {
    "SLACK_WEBHOOK_URL": "slack://T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "EMAIL_URL": "mailtos://alerts:secret@smtp.example.com?to=ops@example.com",
    "WEBHOOK_URL": "json://127.0.0.1:9/hook",
    "DISCORD_WEBHOOK_URL": "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
    "TEAMS_WEBHOOK_URL": "workflow://prod-00.westus.logic.azure.com:443/workflows/abc123def/triggers/manual/paths/invoke?sig=xyz",
    "TELEGRAM_URL": "tgram://123456789:abcdefg_hijklmnop/-1001234567",
    "PAGERDUTY_URL": "pagerduty://integrationkey@apikey",
    "ALERTMANAGER_URL": "http://alertmanager:9093",
}


def bare_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "DIALWATCH_LOG_FORMAT": "json", **extra}


def exported(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*export (\w+)=(\S+)", text, re.MULTILINE))


@pytest.mark.parametrize(
    ("providers", "channels"),
    [(["dial"], ["slack"]), (list(PROVIDERS), list(CHANNEL_KINDS))],
    ids=["dial-slack", "everything"],
)
async def test_init_writes_a_file_that_validates_once_its_variables_are_set(
    tmp_path: Path, providers: list[str], channels: list[str]
) -> None:
    args = [f"--provider={p}" for p in providers] + [f"--channel={c}" for c in channels]
    made = await dialwatch("init", *args, env=bare_env(), cwd=tmp_path)
    assert made.code == 0, made.err
    named = exported(made.out)
    assert "dialwatch validate" in made.out
    assert "dialwatch check --dry-run" in made.out
    text = (tmp_path / "rules.yaml").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert set(re.findall(r"\$\{(\w+)\}", code)) == set(named)  # the ones without default
    env = bare_env(**{name: VALUES.get(name, "key_0123456789") for name in named})
    checked = await dialwatch("validate", env=env, cwd=tmp_path)
    assert checked.code == 0, checked.err
    assert checked.out.startswith(f"rules.yaml: OK: {len(channels)} channel(s), ")

    again = await dialwatch("init", "--provider=mifumo", env=bare_env(), cwd=tmp_path)
    assert again.code == 2
    assert "rules.yaml exists: not overwritten" in again.err
    assert (tmp_path / "rules.yaml").read_text() == text


async def test_init_example_prints_the_example_the_package_ships(tmp_path: Path) -> None:
    printed = await dialwatch("init", "--example", env=bare_env(), cwd=tmp_path)
    assert printed.code == 0
    assert printed.out == example()
    assert "kind: balance_below" in printed.out
    assert not (tmp_path / "rules.yaml").exists()


async def test_no_rules_file_says_how_to_make_one(tmp_path: Path) -> None:
    for command in ("validate", "check", "run", "test-notify", "backtest"):
        ran = await dialwatch(command, env=bare_env(), cwd=tmp_path)
        assert ran.code == 2, command
        assert "rules.yaml: no rules file here. Make one with `dialwatch init" in ran.err


async def test_one_error_per_mistake_and_yaml_errors_show_the_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "channels:\n"
        '  oncall: "${UNSET_WEBHOOK}"\n'
        "rules:\n"
        "  - name: low\n"
        "    kind: balance_belw\n"
        '    threshold: "$5.00"\n'
        '    title: "{{ balance }} left"\n'
    )
    ran = await dialwatch("validate", env=bare_env(), cwd=tmp_path)
    assert ran.code == 2
    assert ran.err.splitlines() == [
        "rules.yaml:2:11: channels.oncall: environment variable ${UNSET_WEBHOOK} is not set; "
        "set it",
        "rules.yaml:5:5: rules[0].kind: unknown rule kind; did you mean 'balance_below'? valid "
        "kinds: balance_below, subscription_cancelling, numbers_at_risk, "
        "payment_method_expiring, spend_above, usage_item, ledger_event, runway_below, "
        "quota_above, spend_anomaly",
    ]

    rules.write_text("channels:\n  oncall: json://x/y\nrules:\n  - name: low\n     kind: x\n")
    ran = await dialwatch("validate", env=bare_env(), cwd=tmp_path)
    assert ran.code == 2
    assert ran.err.splitlines() == [
        "rules.yaml:5:10: (yaml): mapping values are not allowed here",
        "  |      kind: x",
        "  |          ^",
        "  hint: check the indentation: keys of one mapping, and the `- ` items of one list, "
        "start at the same column; use spaces, not tabs",
    ]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_explains_itself_with_an_example() -> None:
    for name, command in subcommands().items():
        text = command.format_help()
        assert command.description, name
        assert "Example:\n  dialwatch" in text or "Example:\n  DIALWATCH" in text, name


def test_the_readme_command_table_matches_the_parser() -> None:
    """Every command is in the README's table with exactly the options it takes."""
    rows = re.findall(r"^\| `dialwatch ([a-z-]+)([^`]*)` \|", README, re.MULTILINE)
    table = {name: set(re.findall(r"--[a-z-]+", rest)) for name, rest in rows}
    parsers = subcommands()
    assert set(table) == set(parsers)
    for name, command in parsers.items():
        flags = {
            option
            for action in command._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"
        }
        assert table[name] == flags, name


async def test_check_one_account_and_a_dry_run_as_the_channel_gets_it(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f'channels:\n  oncall: "{webhook.url}"\ndefaults:\n  notify: [oncall]\nrules:\n'
        '  - {name: wallet-low, kind: balance_below, threshold: "$50.00"}\n'
        '  - {name: wallet-critical, kind: balance_below, threshold: "$10.00", '
        "severity: critical}\n"
    )
    env = service_env(dial.base_url, tmp_path / "elsewhere.yaml", tmp_path / "state.db")
    dial.account.balance_cents = 800
    dry = await dialwatch("check", "--dry-run", "--rules", str(rules), env=env)
    assert dry.code == 1, dry.err
    assert "dial: FIRING   critical wallet-critical: wallet balance $8.00 is below $10.00" in (
        dry.out
    )
    assert "dry run: would send 1 message(s) (2 notification(s)); no state changed" in dry.out
    assert "--> oncall (group): [CRITICAL] dial: 2 notifications (wallet-low, wallet-critical)" in (
        dry.out
    )
    assert webhook.received == []
    assert not (tmp_path / "state.db").exists()

    other = await dialwatch("check", "--account", "dial-eu", "--rules", str(rules), env=env)
    assert other.code == 2
    assert "no account named dial-eu; the accounts: dial" in other.err
    only = await dialwatch("check", "--account", "dial", "--rules", str(rules), env=env)
    assert only.code == 1
    assert '"event": "alert.decision"' in only.err  # the logs: on stderr
    assert '"event"' not in only.out  # stdout: the command's own output only
    assert only.out.startswith("dial: wallet balance $8.00\n")


async def simulate() -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """`dialwatch simulate` as a user starts it, and the variables it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dialwatch", "simulate", env=bare_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    printed = ""
    async with asyncio.timeout(30):
        while "then: dialwatch check --dry-run" not in printed:
            line = await process.stdout.readline()
            assert line, "simulate ended early"
            printed += line.decode()
    return process, exported(printed)


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), 10)


async def test_simulate_serves_every_provider_for_an_init_file(
    tmp_path: Path, webhook: WebhookReceiver
) -> None:
    process, env = await simulate()
    try:
        await dialwatch(
            "init", *(f"--provider={p}" for p in PROVIDERS), "--channel=webhook",
            env=bare_env(), cwd=tmp_path,
        )  # fmt: skip
        checked = await dialwatch(
            "check", "--dry-run", env=bare_env(**env, WEBHOOK_URL=webhook.url), cwd=tmp_path
        )
    finally:
        assert await stop(process) == 0
    assert checked.code == 1, checked.err
    for line in (
        "dial: wallet balance $42.10",
        "dial: FIRING   warning  wallet-low: wallet balance $42.10 is below $50.00",
        "sms: FIRING   warning  sms-credits-low: SMS credit balance 420 credits is below "
        "500 credits",
        "webhooks: FIRING   warning  quota-80:",
    ):
        assert line in checked.out, line


def use_it_commands() -> list[str]:
    """The commands of the README's "Use it" block, comments removed."""
    block = README.split("<!-- use-it:", 1)[1].split("<!-- /use-it -->", 1)[0]
    code = block.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in code.splitlines()]
    return [line for line in lines if line]


@pytest.mark.timeout(600)
async def test_the_readme_use_it_commands_run_in_order_in_a_fresh_venv(
    tmp_path: Path, webhook: WebhookReceiver
) -> None:
    """pip install, init, validate, test-notify, check --dry-run, run: as written, in a
    fresh venv, with `dialwatch simulate` standing in for Dial and a local webhook for
    Slack. Exports take the simulator's values (the README's are placeholders)."""
    commands = use_it_commands()
    assert [c.split()[0:2] for c in commands] == [
        ["pip", "install"], ["dialwatch", "init"], ["export", "DIAL_API_KEY=sk_live_..."],
        ["export", "SLACK_WEBHOOK_URL=slack://..."], ["dialwatch", "validate"],
        ["dialwatch", "test-notify"], ["dialwatch", "check"], ["dialwatch", "run"],
    ]  # fmt: skip
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    work = tmp_path / "work"
    work.mkdir()
    process, simulated = await simulate()
    listen = f"127.0.0.1:{free_port()}"
    env = bare_env(PATH=f"{bin_dir}:{os.environ['PATH']}", DIALWATCH_LISTEN=listen)
    outputs: dict[str, Ran] = {}
    try:
        for command in commands:
            words = command.split()
            if words[0] == "export":
                name = words[1].split("=", 1)[0]
                env[name] = webhook.url if name == "SLACK_WEBHOOK_URL" else simulated[name]
                env["DIAL_BASE_URL"] = simulated["DIAL_BASE_URL"]
                continue
            if words[:2] == ["pip", "install"]:
                ran = await run_in(work, env, str(bin_dir / "pip"), "install", "-q", str(ROOT))
                assert ran.code == 0, ran.err
                continue
            if words[:2] == ["dialwatch", "run"]:
                outputs["run"] = await run_until_alert(work, env, webhook)
                continue
            outputs[words[1]] = ran = await run_in(work, env, *words)
            assert ran.code in ((0, 1) if words[1] == "check" else (0,)), (command, ran.err)
    finally:
        assert await stop(process) == 0
    assert outputs["validate"].out.startswith("rules.yaml: OK: 1 channel(s), 6 rule(s)")
    assert outputs["test-notify"].out == "slack: sent\n"
    header = re.search(r"^--> slack \((\w+)\): (.*)$", outputs["check"].out, re.MULTILINE)
    assert header is not None
    assert header[2] == "[CRITICAL] dial: 2 notifications (wallet-low, wallet-empty-soon)"
    assert outputs["run"].code == 0


async def run_in(cwd: Path, env: dict[str, str], *args: str) -> Ran:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def run_until_alert(cwd: Path, env: dict[str, str], webhook: WebhookReceiver) -> Ran:
    """`dialwatch run` until its first alert reaches the channel, then SIGTERM."""
    seen = len(webhook.received)
    process = await asyncio.create_subprocess_exec(
        "dialwatch", "run", env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await wait_until(lambda: len(webhook.received) > seen, timeout=60)
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert "wallet-low" in webhook.received[-1]["title"]
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())
