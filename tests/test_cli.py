"""The `dialwatch` command as users run it: real processes, signals and exit codes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from dialwatch.simulators.dial import DialSimulator
from tests.conftest import API_KEY, RULES
from tests.processes import dialwatch, service_env, wait_until, wait_until_async
from tests.servers import SmtpServer, WebhookReceiver

CASES = Path(__file__).parent / "config_cases"
SMTP_PASSWORD = "hunter2-SMTP-PASSWORD"


@pytest.fixture
def env(
    tmp_path: Path, dial: DialSimulator, webhook: WebhookReceiver, smtp: SmtpServer
) -> dict[str, str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(webhook=webhook.url, smtp=smtp.url))
    return service_env(dial.base_url, rules, tmp_path / "state.db")


async def start_service(
    env: dict[str, str], output: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """`dialwatch run` as a real process."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dialwatch", "run", env=env, stdout=output, stderr=output
    )


async def test_check_exit_codes_follow_what_is_firing(
    env: dict[str, str], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """check exits 0 when all is well, 1 when something fires, 2 when the API fails."""
    ok = await dialwatch("check", env=env)
    assert (ok.code, ok.out) == (0, "dial: wallet balance $235.00\ndial: OK: nothing firing\n")

    dial.account.balance_cents = 4000
    firing = await dialwatch("check", env=env)
    assert firing.code == 1
    assert "dial: FIRING   warning  wallet-low: wallet balance $40.00 is below $50.00" in firing.out
    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]

    broken = await dialwatch("check", env={**env, "DIALWATCH_BASE_URL": "http://127.0.0.1:9"})
    assert broken.code == 2
    assert "check failed: connection failed" in broken.err


async def test_check_dry_run_prints_notifications_and_changes_nothing(
    env: dict[str, str], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """--dry-run shows each message per channel, sends none, and keeps no state."""
    dial.account.balance_cents = 4000
    first = await dialwatch("check", "--dry-run", env=env)
    again = await dialwatch("check", "--dry-run", env=env)

    assert first.code == 1
    assert "dry run: would send 2 message(s) (2 notification(s)); no state changed" in first.out
    assert "--> oncall (first): [WARNING] dial / wallet-low: wallet balance $40.00" in first.out
    assert "--> finance (first):" in first.out
    assert "    Threshold: $50.00" in first.out
    # Nothing was recorded: the second dry run still sees a first notification.
    assert "--> oncall (first): [WARNING] dial / wallet-low" in again.out
    assert webhook.received == []
    assert not Path(env["DIALWATCH_STATE"]).exists()  # not even created


async def test_validate_names_line_and_key_and_run_refuses_without_traceback(
    env: dict[str, str],
) -> None:
    """A misspelt key: validate prints FILE:LINE:COL; run exits 2 with the same, no traceback."""
    path = CASES / "misspelt_key.yaml"
    valid = await dialwatch("validate", env=env)
    invalid = await dialwatch("validate", str(path), env=env)
    run = await dialwatch("run", env={**env, "DIALWATCH_RULES": str(path)})

    assert valid.code == 0
    assert "OK: 2 channel(s), 5 rule(s)" in valid.out
    assert invalid.code == 2
    assert f"{path}:6:5: rules[0].threshhold: unknown key; did you mean 'threshold'?" in invalid.err
    assert run.code == 2
    assert f"{path}:6:5: rules[0].threshhold" in run.err
    assert "Traceback" not in run.err + run.out


async def test_test_notify_reports_each_failed_channel(
    env: dict[str, str], webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """test-notify sends to every channel and names the ones that failed."""
    ok = await dialwatch("test-notify", env=env)
    assert ok.code == 0
    assert ok.out == "oncall: sent\nfinance: sent\n"
    assert webhook.titles == ["dialwatch test notification"]
    assert smtp.subjects == ["dialwatch test notification"]

    smtp.stop()
    failed = await dialwatch("test-notify", env=env)
    assert failed.code == 2
    assert "finance: FAILED: Connection error while submitting email" in failed.err
    assert "test-notify failed for: finance" in failed.err

    only = await dialwatch("test-notify", "oncall", env=env)
    assert only.code == 0
    assert only.out == "oncall: sent\n"


async def test_sigterm_stops_the_service_cleanly_and_quickly(
    env: dict[str, str], dial: DialSimulator
) -> None:
    """SIGTERM ends `run` with exit 0 within a few seconds, logging the stop."""
    process = await start_service(env, output=asyncio.subprocess.PIPE)
    await wait_until(lambda: len(dial.requests) >= 1)
    process.send_signal(signal.SIGTERM)
    out, logs = await asyncio.wait_for(process.communicate(), 5)

    assert process.returncode == 0
    assert out == b""  # every command logs to stderr; stdout is its own output
    events = [json.loads(line) for line in logs.decode().splitlines()]
    stopping = [e for e in events if e["event"] == "service.stopping"]
    assert stopping[0]["signal"] == "SIGTERM"
    assert events[-1]["event"] == "service.stopped"


async def test_no_secret_reaches_any_output(
    env: dict[str, str], dial: DialSimulator, tmp_path: Path, smtp: SmtpServer
) -> None:
    """Key and channel password stay out of stdout and stderr, even when things fail."""
    rules = Path(env["DIALWATCH_RULES"])
    rules.write_text(
        rules.read_text().replace(
            smtp.url,
            f"mailto://dialwatch:{SMTP_PASSWORD}@127.0.0.1:9?from=dialwatch@example.com"
            "&to=f@example.com&mode=insecure",
        )
    )
    dial.account.balance_cents = 4000
    outputs = [
        await dialwatch("check", env={**env, "DIALWATCH_LOG_LEVEL": "debug"}),
        await dialwatch("check", "--dry-run", env=env),
        await dialwatch("test-notify", env=env),
        await dialwatch("validate", env=env),
        await dialwatch("--help", env=env),
    ]
    dial.account.api_key = "sk_live_other"
    outputs.append(await dialwatch("check", env=env))

    text = "".join(r.out + r.err for r in outputs)
    assert "finance" in text
    assert "auth" in text
    assert API_KEY not in text  # ...without the key
    assert SMTP_PASSWORD not in text


async def test_running_service_serves_health_metrics_and_reloads_on_sighup(
    env: dict[str, str], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """A real process: endpoints answer; SIGHUP applies a valid file and rejects a bad one."""
    rules = Path(env["DIALWATCH_RULES"])
    base = f"http://{env['DIALWATCH_LISTEN']}"
    process = await start_service(env, output=asyncio.subprocess.PIPE)
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str]:
            async with session.get(base + path) as response:
                return response.status, await response.text()

        async def ready() -> bool:
            try:
                return (await get("/readyz"))[0] == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until_async(ready)
        assert await get("/healthz") == (200, "ok\n")
        assert (
            'dialwatch_balance_cents{account="dial",currency="USD"} 23500.0'
            in (await get("/metrics"))[1]
        )

        rules.write_text(rules.read_text().replace('threshold: "$50.00"', 'threshold: "$500.00"'))
        process.send_signal(signal.SIGHUP)
        await wait_until(lambda: len(webhook.received) == 1)
        assert webhook.titles == [
            "[WARNING] dial / wallet-low: wallet balance $235.00 is below $500.00"
        ]

        rules.write_text(rules.read_text().replace("threshold:", "threshhold:", 1))
        process.send_signal(signal.SIGHUP)
        seen = len(dial.requests)
        await wait_until(lambda: len(dial.requests) >= seen + 2)  # still checking
        assert (await get("/readyz"))[0] == 200

    process.send_signal(signal.SIGTERM)
    _, logs = await asyncio.wait_for(process.communicate(), 10)
    events = [json.loads(line) for line in logs.decode().splitlines()]
    rejected = [e for e in events if e["event"] == "config.reload_rejected"]
    errors = rejected[0]["errors"]
    assert any(
        e.startswith(f"{rules}:") and "rules[0].threshhold: unknown key; did you mean" in e
        for e in errors
    ), errors
    assert [e["event"] for e in events].count("config.reloaded") == 1
    assert len(webhook.received) == 1  # the old rules kept running, nothing re-sent


async def test_sigterm_keeps_undelivered_mail_and_a_restart_delivers_it_once(
    env: dict[str, str], dial: DialSimulator, webhook: WebhookReceiver, smtp: SmtpServer
) -> None:
    """SMTP is down at SIGTERM: the email stays in the outbox and goes out after restart."""
    smtp.stop()
    dial.account.balance_cents = 4000
    first = await start_service(env, output=asyncio.subprocess.PIPE)
    await wait_until(lambda: len(webhook.received) == 1)
    first.send_signal(signal.SIGTERM)
    _, logs = await asyncio.wait_for(first.communicate(), 10)
    assert first.returncode == 0
    stopped = [json.loads(line) for line in logs.decode().splitlines()][-1]
    assert stopped == stopped | {"event": "service.stopped", "pending_notifications": 1}

    smtp.start()
    second = await start_service(env)
    await wait_until(lambda: len(smtp.messages) == 1)
    seen = len(dial.requests)
    await wait_until(lambda: len(dial.requests) >= seen + 2)
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 10) == 0
    assert smtp.subjects == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    assert len(webhook.received) == 1


async def test_silence_commands_mute_list_and_end_a_silence(
    env: dict[str, str], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """silence / silences / unsilence work on the state file the service reads."""
    silenced = await dialwatch(
        "silence", "wallet-*", "--for", "2h", "--reason", "top-up Monday", env=env
    )
    assert silenced.code == 0
    assert silenced.out.startswith("silence 1: wallet-* on every account until ")
    listed = await dialwatch("silences", env=env)
    assert "   1  wallet-*  on every account  until " in listed.out
    assert listed.out.rstrip().endswith("top-up Monday")

    dial.account.balance_cents = 4000
    quiet = await dialwatch("check", env=env)
    assert quiet.code == 1  # firing, but silenced
    assert webhook.received == []

    assert (await dialwatch("unsilence", "1", env=env)).out == "silence 1 ended\n"
    loud = await dialwatch("check", env=env)
    assert loud.code == 1
    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]
    assert (await dialwatch("silences", env=env)).out == "no silences in force\n"

    unknown = await dialwatch("silence", "walet-low", "--for", "1h", "--reason", "x", env=env)
    assert unknown.code == 2
    assert "no rule matches 'walet-low'; rules: wallet-low, wallet-critical" in unknown.err
    again = await dialwatch("unsilence", "1", env=env)
    assert again.code == 2


async def test_a_corrupt_state_file_is_a_clear_error_not_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A state file that is not a database: `check` and `run` say which file and exit 2
    (never 1, which means "firing"), with no traceback."""
    state = Path(env["DIALWATCH_STATE"])
    state.write_bytes(b"this is not a SQLite database, it is a shopping list\n" * 100)
    for command in ("check", "run", "silences"):
        ran = await dialwatch(command, env=env)
        assert ran.code == 2, (command, ran.err)
        assert f"{state}: not a dialwatch state file" in ran.err
        assert "Traceback" not in ran.err + ran.out
