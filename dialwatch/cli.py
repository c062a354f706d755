"""The `dialwatch` command: flags, signals and exit codes only; the work is elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import structlog

from dialwatch import __version__
from dialwatch.clock import SystemClock
from dialwatch.delivery.messages import Message, Part
from dialwatch.delivery.notifier import ChannelNotifier
from dialwatch.delivery.outbox import planned_messages
from dialwatch.errors import ConfigError, DialwatchError, StateUnavailable
from dialwatch.fleet import check_once, only_accounts, open_fleet, reload_rules
from dialwatch.logs import REDACTOR, configure_logging
from dialwatch.pipeline.cycle import AUTH_ALERT, UNHEALTHY_ALERT, CycleReport
from dialwatch.rules.loading import load_rules
from dialwatch.rules.schema import RulesFile
from dialwatch.rules.starter import CHANNEL_KINDS, PROVIDERS, starter
from dialwatch.rules.starter import example as rules_example
from dialwatch.runner import run_service
from dialwatch.settings import Settings, load_settings
from dialwatch.store import is_postgres, open_store, shown_location
from dialwatch.store.transfer import import_sqlite
from dialwatch.units import parse_duration
from dialwatch.web import endpoints

EXIT_OK, EXIT_FIRING, EXIT_ERROR = 0, 1, 2

log = structlog.get_logger("dialwatch.cli")


# Each command: (name, one line for the command list, what it does, an example).
COMMANDS = {
    "init": (
        "write a starter rules.yaml for your providers and channels",
        "Write a commented starter rules file for the providers and channels named, print "
        "each ${VAR} it needs and the next commands. Never overwrites a file.",
        "dialwatch init --provider dial --channel slack\n  dialwatch init --example > full.yaml",
    ),
    "validate": (
        "check a rules file; print every error as FILE:LINE:COL: key: problem",
        "Check a rules file and print every problem at once, each with its file, line, "
        "column and key; when it is valid, list each account with the rules that run on it.",
        "dialwatch validate rules.yaml",
    ),
    "test-notify": (
        "send a test message to channels (all by default)",
        "Send a test message to the named channels (all by default) and name each one that failed.",
        "dialwatch test-notify slack",
    ),
    "check": (
        "check every account once and print what is firing (exit 0: nothing, 1: firing, 2: error)",
        "Check every account once, at the same time; print each account's balance and what "
        "is pending or firing, then send what is due. --dry-run prints what would be sent "
        "instead, per channel as the channel would receive it, and changes no state.",
        "dialwatch check --dry-run\n  dialwatch check --account dial-prod",
    ),
    "run": (
        "run the service: check every account on its interval until stopped",
        "Run the service: check each account every interval until SIGTERM or SIGINT, send "
        "notifications, serve /healthz, /readyz, /metrics and the status page. SIGHUP "
        "reloads the rules file.",
        "dialwatch run --rules /config/rules.yaml",
    ),
    "backtest": (
        "replay the accounts' real ledgers through the rules: what would have fired",
        "Read each account's ledger back to --since, rebuild its balance, and replay it "
        "through the rules (one check per interval, the real lifecycle and routing; nothing "
        "is sent, no state is written). Prints how often each rule would have fired and "
        "notified.",
        "dialwatch backtest --since 30d --suggest --html report.html",
    ),
    "simulate": (
        "serve simulated provider APIs on loopback, to try your rules without real keys",
        "Serve the simulated Dial, Mifumo, HookBridge and Cloudflare APIs on 127.0.0.1 "
        "until stopped, and print the environment that points check and run at them.",
        "dialwatch simulate",
    ),
    "demo": (
        "run the service against built-in simulated Dial and Mifumo APIs (ends by itself)",
        "Run the service against simulated Dial and Mifumo APIs through a scripted story "
        "(a draining wallet, a spend spike, a top-up); ends by itself.",
        "dialwatch demo",
    ),
    "silence": (
        "mute a rule's alerts for a while (state is kept; RULE may be a glob)",
        "Mute the alerts of RULE (a name or a glob) on one account or all until the time is "
        "up; their state is kept, and they speak up after, if still firing.",
        'dialwatch silence wallet-low --for 12h --reason "top-up approved"',
    ),
    "silences": (
        "list the silences in force",
        "List the silences in force, with their numbers.",
        "dialwatch silences",
    ),
    "unsilence": (
        "end a silence now",
        "End a silence now (its number is in `dialwatch silences`).",
        "dialwatch unsilence 3",
    ),
    "state": (
        "manage the state store",
        "Manage the state store: `state import FILE` copies a SQLite state file into the "
        "PostgreSQL database of DIALWATCH_STATE.",
        "DIALWATCH_STATE=postgresql://... dialwatch state import dialwatch.db",
    ),
    "healthcheck": (
        "exit 0 if the running service's /healthz answers 200 (for container HEALTHCHECKs)",
        "Ask the running service's /healthz (at DIALWATCH_LISTEN); exit 0 if healthy.",
        "dialwatch healthcheck",
    ),
}
RULES_HELP = "the rules file (default: DIALWATCH_RULES, else rules.yaml)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dialwatch",
        description=(
            "Watch billing APIs (Dial, Mifumo SMS, HookBridge, Cloudflare): balances, "
            "subscriptions, quotas and spend, and notify through apprise or Alertmanager. "
            "Settings come from DIALWATCH_* environment variables or a .env file; rules and "
            "accounts from a rules file."
        ),
        epilog="New here? dialwatch init --provider dial --channel slack",
    )
    parser.add_argument("--version", action="version", version=f"dialwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str) -> argparse.ArgumentParser:
        short, description, example = COMMANDS[name]
        return commands.add_parser(
            name, help=short, description=description, epilog=f"Example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip

    def rules_flag(command: argparse.ArgumentParser) -> None:
        command.add_argument("--rules", type=Path, metavar="FILE", help=RULES_HELP)

    init = add("init")
    init.add_argument(
        "--provider", action="append", default=[], choices=PROVIDERS, help="repeatable"
    )
    init.add_argument(
        "--channel", action="append", default=[], choices=CHANNEL_KINDS, help="repeatable"
    )
    init.add_argument("--example", action="store_true", help="print the full documented example")
    init.add_argument(
        "--output", type=Path, default=Path("rules.yaml"), metavar="FILE",
        help="where to write it (default: rules.yaml)",
    )  # fmt: skip
    validate = add("validate")
    validate.add_argument("file", nargs="?", type=Path, help=RULES_HELP)
    rules_flag(validate)
    test_notify = add("test-notify")
    test_notify.add_argument("channels", nargs="*", metavar="CHANNEL", help="channel names")
    rules_flag(test_notify)
    check = add("check")
    check.add_argument(
        "--dry-run",
        action="store_true",
        help="print the notifications that would be sent; change no state, send nothing",
    )
    check.add_argument(
        "--account", action="append", default=[], metavar="NAME", help="only this account"
    )
    rules_flag(check)
    run = add("run")
    rules_flag(run)
    backtest = add("backtest")
    backtest.add_argument(
        "--since", default="30d", help="a duration before --until (30d, 12h) or an ISO time"
    )
    backtest.add_argument("--until", help="an ISO time (default: now)")
    backtest.add_argument(
        "--account", action="append", default=[], metavar="NAME", help="only this account"
    )
    rules_flag(backtest)
    backtest.add_argument(
        "--format", choices=("text", "json"), help="default: text on a terminal, json on a pipe"
    )
    backtest.add_argument("--html", type=Path, metavar="FILE", help="also write an HTML report")
    backtest.add_argument(
        "--suggest", action="store_true", help="suggest thresholds learned from the history"
    )
    add("simulate")
    add("demo")
    silence = add("silence")
    silence.add_argument(
        "rule", metavar="RULE", help="rule name or glob, e.g. wallet-low, 'wallet-*'"
    )
    silence.add_argument("--account", help="only this account (default: every account)")
    silence.add_argument(
        "--for", dest="duration", required=True, metavar="DURATION", help="e.g. 30m, 2h, 1d"
    )
    silence.add_argument("--reason", required=True, help="why, for whoever looks next")
    rules_flag(silence)
    add("silences")
    unsilence = add("unsilence")
    unsilence.add_argument("id", type=int, metavar="ID", help="the silence's number")
    state = add("state")
    state_commands = state.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    state_import = state_commands.add_parser(
        "import",
        help="copy a SQLite state file into the PostgreSQL database of DIALWATCH_STATE "
        "(which must hold no state yet)",
    )
    state_import.add_argument("file", type=Path, metavar="FILE", help="the SQLite state file")
    add("healthcheck")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo()
        if args.command == "init":
            return _init(args.provider, args.channel, args.output, example=args.example)
        settings = load_settings()
        if args.command == "healthcheck":
            return _healthcheck(settings)
        # One log stream, stderr, for every command: stdout is the command's own output.
        configure_logging(settings.effective_log_format, settings.log_level, sys.stderr)
        if args.command == "simulate":
            return asyncio.run(_simulate())
        if args.command == "state":
            return asyncio.run(_state_import(settings, args.file))
        if args.command in ("silences", "unsilence"):
            return asyncio.run(
                _silences(settings, args.id if args.command == "unsilence" else None)
            )
        path = getattr(args, "file", None) or args.rules or settings.rules
        if args.command == "validate":
            return _validate(path)
        rules = load_rules(path)
        if args.command == "backtest":
            return asyncio.run(_backtest(settings, rules, args))
        if args.command == "silence":
            return asyncio.run(
                _silence(settings, rules, args.rule, args.account, args.duration, args.reason)
            )
        if args.command == "run":
            return asyncio.run(_run(settings.model_copy(update={"rules": path}), rules))
        if args.command == "check":
            rules = only_accounts(rules, settings, args.account)
            return asyncio.run(_check(settings, rules, dry_run=args.dry_run))
        return asyncio.run(_test_notify(rules, args.channels))
    except (ConfigError, StateUnavailable) as exc:
        print(REDACTOR.redact(str(exc)), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _healthcheck(settings: Settings) -> int:
    address = settings.listen_address
    if address is None:
        print("DIALWATCH_LISTEN is off: no endpoint to check", file=sys.stderr)
        return EXIT_ERROR
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(response.read().decode().strip())
            return EXIT_OK
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return EXIT_FIRING


async def _silence(
    settings: Settings,
    rules: RulesFile,
    rule: str,
    account: str | None,
    duration: str,
    reason: str,
) -> int:
    names = [r.name for r in rules.rules] + [AUTH_ALERT, UNHEALTHY_ALERT]
    if not any(fnmatchcase(name, rule) for name in names):
        print(f"no rule matches {rule!r}; rules: {', '.join(names)}", file=sys.stderr)
        return EXIT_ERROR
    accounts = list(rules.account_providers())
    if account is not None and account not in accounts:
        print(f"no account {account!r}; accounts: {', '.join(accounts)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        length = parse_duration(duration)
    except ValueError as exc:
        print(f"--for: {exc}", file=sys.stderr)
        return EXIT_ERROR
    now = SystemClock().now()
    store = await open_store(settings.state.get_secret_value())
    try:
        silence_id = await store.add_silence(rule, account, now + length, reason, now)
    finally:
        await store.close()
    print(
        f"silence {silence_id}: {rule} on {account or 'every account'} until "
        f"{now + length:%Y-%m-%d %H:%M UTC} ({reason})"
    )
    return EXIT_OK


async def _silences(settings: Settings, end: int | None) -> int:
    """List the silences in force, or end silence `end`."""
    now = SystemClock().now()
    store = await open_store(settings.state.get_secret_value())
    try:
        if end is not None:
            if not await store.end_silence(end, now):
                print(f"no silence {end} in force (see `dialwatch silences`)", file=sys.stderr)
                return EXIT_ERROR
            print(f"silence {end} ended")
            return EXIT_OK
        silences = await store.silences(now)
    finally:
        await store.close()
    if not silences:
        print("no silences in force")
    for silence in silences:
        print(
            f"{silence.id:>4}  {silence.rule}  on {silence.account or 'every account'}  "
            f"until {silence.ends_at:%Y-%m-%d %H:%M UTC}  {silence.reason}"
        )
    return EXIT_OK


async def _state_import(settings: Settings, source: Path) -> int:
    target = settings.state.get_secret_value()
    if not is_postgres(target):
        print(
            "DIALWATCH_STATE is not a PostgreSQL URL (postgresql://user:password@host/db): "
            "nothing to import into",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        copied = await import_sqlite(source, target, settings.replica)
    except StateUnavailable as exc:
        print(REDACTOR.redact(str(exc)), file=sys.stderr)
        return EXIT_ERROR
    print(f"imported {source} into {shown_location(target)}:")
    for table, count in copied.items():
        print(f"  {table}: {count} row(s)")
    return EXIT_OK


def _validate(path: Path) -> int:
    try:
        rules = load_rules(path)
    except (ConfigError, StateUnavailable) as exc:
        print(REDACTOR.redact(str(exc)), file=sys.stderr)
        return EXIT_ERROR
    print(f"{path}: OK: {len(rules.channels)} channel(s), {len(rules.rules)} rule(s)")
    source = "" if rules.accounts else ", from DIALWATCH_API_KEY"
    for name, provider in rules.account_providers().items():
        names = [r.name for r in rules.rules_for(name, provider)]
        print(f"  {name} ({provider}{source}): {', '.join(names) or 'no rules'}")
    return EXIT_OK


async def _run(settings: Settings, rules: RulesFile) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stopper(stop, sig))
    async with open_fleet(settings, rules) as fleet:
        loop.add_signal_handler(signal.SIGHUP, reload_rules, fleet, settings.rules)
        runner = None
        if settings.listen_address is not None:
            host, port = settings.listen_address
            app = endpoints.make_app(
                fleet.all, fleet.metrics, fleet.readiness_problem, fleet.checked
            )
            runner = await endpoints.start(app, host, port)
            log.info("endpoints.listening", host=host, port=port)
        try:
            await run_service(fleet, stop)
        finally:
            if runner is not None:
                await runner.cleanup()
    return EXIT_OK


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handle() -> None:
        log.info("service.stopping", signal=sig.name)
        stop.set()

    return handle


async def _check(settings: Settings, rules: RulesFile, *, dry_run: bool) -> int:
    checked = await check_once(settings, rules, dry_run=dry_run)
    for account in checked.skipped:
        print(
            f"{account}: skipped: a running dialwatch checks this account "
            "(see its status page); `check --dry-run` shows what it would send",
            file=sys.stderr,
        )
    notifier = ChannelNotifier(rules.channels, SystemClock()) if dry_run else None
    for account, report in checked.reports.items():
        _print_report(account, report, dry_run=dry_run, notifier=notifier)
    for row, error in checked.delivery.failed:
        print(
            f"send to {row.channel} failed ({error}); it stays in the outbox and "
            "`dialwatch run` retries it",
            file=sys.stderr,
        )
    reports = checked.reports.values()
    if any(report.errors for report in reports):
        return EXIT_ERROR
    return EXIT_FIRING if any(report.firing for report in reports) else EXIT_OK


def _print_report(
    account: str, report: CycleReport, *, dry_run: bool, notifier: ChannelNotifier | None = None
) -> None:
    for error in report.errors:
        print(f"{account}: check failed: {REDACTOR.redact(str(error))}", file=sys.stderr)
    snapshot = report.snapshot
    if snapshot is not None and snapshot.balance is not None:
        print(f"{account}: {snapshot.balance_meaning} {snapshot.balance}")
    if report.ledger is not None:
        backfill = " (first start: history read, no per-item alerts)" * report.ledger.backfilled
        print(f"{account}: ledger: {report.ledger.new_items} new item(s){backfill}")
    for outcome in report.outcomes:
        status = "event" if outcome.decision.value == "event" else outcome.state.status.value
        if outcome.finding.learning:
            status = "learning"
        if status != "inactive":
            print(
                f"{account}: {status.upper():8} {outcome.spec.severity:8} "
                f"{outcome.spec.name}: {outcome.finding.summary}"
            )
    if not report.firing and not report.errors:
        print(f"{account}: OK: nothing firing")
    if dry_run:
        planned = planned_messages(account, report.queued)
        print(
            f"{account}: dry run: would send {len(planned)} message(s) "
            f"({len(report.queued)} notification(s)); no state changed"
        )
        for channel, decision, message, held in planned:
            shown = notifier.as_sent(channel, message) if notifier else message
            when = f", held by quiet hours until {held:%Y-%m-%d %H:%M UTC}" if held else ""
            print(f"\n--> {channel} ({decision}{when}): {shown.title}")
            print("    " + shown.body.replace("\n", "\n    "))


async def _backtest(settings: Settings, rules: RulesFile, args: argparse.Namespace) -> int:
    from dialwatch.backtest.command import parse_range, run_backtest
    from dialwatch.backtest.report import to_html, to_json, to_text

    since, until = parse_range(args.since, args.until, SystemClock().now())
    result = await run_backtest(
        settings, rules, since, until, args.account,
        with_suggestions=args.suggest, show_progress=sys.stderr.isatty(),
    )  # fmt: skip
    fmt = args.format or ("text" if sys.stdout.isatty() else "json")
    print(to_text(result) if fmt == "text" else json.dumps(to_json(result), indent=2))
    if args.html is not None:
        html = to_html(result)
        await asyncio.to_thread(args.html.write_text, html, encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return EXIT_ERROR if result.failed else EXIT_OK


async def _test_notify(rules: RulesFile, names: list[str]) -> int:
    unknown = [n for n in names if n not in rules.channels]
    if unknown:
        print(
            f"no such channel: {', '.join(unknown)} (defined: {', '.join(rules.channels)})",
            file=sys.stderr,
        )
        return EXIT_ERROR
    notifier = ChannelNotifier(rules.channels, SystemClock())
    message = Message(
        "dialwatch test notification",
        "This is a test from `dialwatch test-notify`: this channel is set up correctly.",
        "info",
    )
    failed = []
    for name in names or notifier.channels:
        error = await notifier.send(name, message, (Part("dialwatch-test", "first", message),))
        if error is None:
            print(f"{name}: sent")
        else:
            failed.append(name)
            print(f"{name}: FAILED: {error}", file=sys.stderr)
    if failed:
        print(f"test-notify failed for: {', '.join(failed)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _init(providers: list[str], channels: list[str], output: Path, *, example: bool) -> int:
    if example:
        print(rules_example(), end="")
        return EXIT_OK
    if output.exists():
        print(
            f"{output} exists: not overwritten. Check it with `dialwatch validate {output}`, "
            "or write a new one elsewhere with --output FILE",
            file=sys.stderr,
        )
        return EXIT_ERROR
    text, variables = starter(providers, channels)
    output.write_text(text, encoding="utf-8")
    required = [v for v in variables if v.required]
    print(f"wrote {output}: {len(providers or ['dial'])} account(s), every field commented")
    print("\nIt reads these environment variables (set them before the next steps):")
    width = max(len(v.name) for v in required)
    for v in required:
        print(f"  export {v.name}=...{' ' * (width - len(v.name))}   # {v.meaning}")
    optional = [v.name for v in variables if not v.required]
    if optional:
        print(f"Optional (default: the real APIs): {', '.join(optional)}")
    flag = "" if output == Path("rules.yaml") else f" --rules {output}"
    print("\nNext:")
    print(f"  dialwatch validate{flag}            # the file is right")
    print(f"  dialwatch test-notify{flag}         # each channel gets a test message")
    print(f"  dialwatch check --dry-run{flag}     # what would fire and be sent now")
    print("(No keys yet? `dialwatch simulate` serves every provider's API on loopback.)")
    return EXIT_OK


async def _simulate() -> int:
    from dialwatch.simulators.playground import environment, simulators

    apis = simulators(SystemClock().now())
    urls = {provider: await api.start() for provider, api in apis.items()}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("Simulated APIs on 127.0.0.1 (a low Dial wallet with a day of calls, low SMS")
    print("credits, a quota at 85%, a Cloudflare charge). In another shell:\n")
    for name, value in environment(urls):
        print(f"export {name}={value}")
    print("\nthen: dialwatch check --dry-run    (Ctrl-C here stops the simulators)", flush=True)
    try:
        await stop.wait()
    finally:
        for api in apis.values():
            await api.stop()
    return EXIT_OK


def _demo() -> int:
    from dialwatch.demo import run_demo

    configure_logging("console", "info", sys.stderr)
    try:
        asyncio.run(run_demo())
    except DialwatchError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
