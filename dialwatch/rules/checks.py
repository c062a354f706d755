"""What the schema alone cannot see: names that must refer to something or be unique,
channel URLs apprise must accept, templates that must render, and rules that some
account must be able to run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apprise
from pydantic import ValidationError

from dialwatch.errors import ConfigIssue
from dialwatch.providers import DEFAULT_PROVIDER, REGISTRY
from dialwatch.rules.positions import Source, dotted, locate
from dialwatch.rules.schema import (
    ANY_RULE,
    DEFAULT_ACCOUNT,
    RULE_KINDS,
    WATCHER_ALERTS,
    unsupported,
)
from dialwatch.rules.templates import problem as template_problem

Add = Callable[[tuple[Any, ...], str], None]


def cross_check(data: dict[Any, Any], source: Source, filename: str) -> list[ConfigIssue]:
    """What the schema alone cannot see: names that must refer to something, or be unique.

    Works on the raw data, so these are reported alongside schema errors, not after.
    """
    issues: list[ConfigIssue] = []

    def add(loc: tuple[Any, ...], message: str) -> None:
        line, col = locate(source.marks, loc)
        issues.append(ConfigIssue(filename, line, col, dotted(loc), message))

    channels = data.get("channels")
    channels = channels if isinstance(channels, dict) else {}
    known = ", ".join(map(str, channels)) or "none defined"
    if not channels:
        add(("channels",), "define at least one channel (name: apprise URL)")
    for name, channel in channels.items():
        url = channel.get("url") if isinstance(channel, dict) else channel
        problem = channel_url_problem(url) if isinstance(url, str) else None
        if problem:
            add(("channels", name), problem)
        if isinstance(channel, dict):
            for key in ("title", "body", "summary", "description"):
                if isinstance(channel.get(key), str):
                    issue = template_problem(channel[key], None)
                    if issue:
                        add(("channels", name, key), issue)

    def check_notify(loc: tuple[Any, ...], notify: object) -> None:
        for i, channel in enumerate(notify if isinstance(notify, list) else []):
            if isinstance(channel, str) and channel not in channels:
                add((*loc, i), f"no channel named '{channel}'; defined: {known}")

    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        check_notify(("defaults", "notify"), defaults.get("notify"))
    intervals = data.get("time_intervals")
    interval_names = list(intervals) if isinstance(intervals, dict) else []

    def check_mute(loc: tuple[Any, ...], names: object) -> None:
        for i, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in interval_names:
                defined = ", ".join(interval_names) or "none defined"
                add((*loc, i), f"no time interval named '{name}'; defined: {defined}")

    digests = data.get("digest")
    for index, digest in enumerate(digests if isinstance(digests, list) else []):
        if isinstance(digest, dict):
            check_notify(("digest", index, "notify"), digest.get("notify"))
            notify = digest.get("notify")
            for i, name in enumerate(notify if isinstance(notify, list) else []):
                channel = channels.get(name) if isinstance(name, str) else None
                if isinstance(channel, dict) and "alertmanager" in channel:
                    add(
                        ("digest", index, "notify", i),
                        f"'{name}' is an Alertmanager channel, which takes alerts, not "
                        "digests; send digests to a chat or email channel",
                    )
    routes = data.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            check_notify(("routes", index, "notify"), route.get("notify"))
            check_mute(("routes", index, "mute_during"), route.get("mute_during"))
    has_fallback = bool(routes) or (isinstance(defaults, dict) and bool(defaults.get("notify")))
    accounts = _check_accounts(data.get("accounts"), add)
    rules = data.get("rules")
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        name = rule.get("name")
        if isinstance(name, str) and name in seen:
            add(
                ("rules", index, "name"),
                f"duplicate rule name '{name}' (first at rules[{seen[name]}]); "
                "names must be unique",
            )
        if isinstance(name, str):
            seen.setdefault(name, index)
        if not rule.get("notify") and not has_fallback:
            add(
                ("rules", index),
                "no channel to notify: set notify here, in defaults.notify, or add routes",
            )
        check_notify(("rules", index, "notify"), rule.get("notify"))
        check_mute(("rules", index, "mute_during"), rule.get("mute_during"))
        _check_rule_accounts(rule, index, accounts, add)
        for key in ("title", "body"):
            if isinstance(rule.get(key), str) and isinstance(rule.get("kind"), str):
                issue = template_problem(rule[key], rule["kind"])
                if issue:
                    add(("rules", index, key), issue)
    names = [*seen, *WATCHER_ALERTS]
    kinds = [*RULE_KINDS, *WATCHER_ALERTS.values()]
    inhibit = data.get("inhibit")
    for index, entry in enumerate(inhibit if isinstance(inhibit, list) else []):
        for side in ("source", "target"):
            matcher = entry.get(side) if isinstance(entry, dict) else None
            if not isinstance(matcher, dict):
                continue
            for key, valid in (("rule", names), ("kind", kinds)):
                given = matcher.get(key)
                for value in [given] if isinstance(given, str) else given or []:
                    if isinstance(value, str) and value not in valid:
                        add(
                            ("inhibit", index, side, key),
                            f"no {key} named '{value}'; known: {', '.join(valid)}",
                        )
    return issues


def _check_accounts(raw: object, add: Add) -> dict[str, str]:
    """Account names (unique) and their providers; without an `accounts` section, the
    one Dial account from the environment."""
    if not isinstance(raw, list):
        return {DEFAULT_ACCOUNT: DEFAULT_PROVIDER}
    accounts: dict[str, str] = {}
    for index, account in enumerate(raw):
        if not isinstance(account, dict):
            continue
        name, provider = account.get("name"), account.get("provider")
        if isinstance(name, str) and name in accounts:
            add(("accounts", index, "name"), f"duplicate account name '{name}'")
        if isinstance(name, str) and isinstance(provider, str) and provider in REGISTRY:
            accounts.setdefault(name, provider)
        plugin = REGISTRY.get(provider) if isinstance(provider, str) else None
        email_auth = plugin.email_auth if plugin else None
        if account.get("api_email") is not None and email_auth is None:
            takes = " or ".join(p.email_auth for p in REGISTRY.values() if p.email_auth)
            add(
                ("accounts", index, "api_email"),
                f"api_email is for {takes}; other providers take api_key only",
            )
    if not raw:
        add(("accounts",), "list at least one account, or leave the section out")
    return accounts


def _check_rule_accounts(
    rule: dict[Any, Any], index: int, accounts: dict[str, str], add: Add
) -> None:
    """A rule's `accounts` must exist, and at least one of them must support it."""
    named = rule.get("accounts")
    names = [n for n in (named if isinstance(named, list) else []) if isinstance(n, str)]
    for i, name in enumerate(names):
        if name not in accounts:
            add(
                ("rules", index, "accounts", i),
                f"no account named '{name}'; defined: {', '.join(accounts) or 'none'}",
            )
    kind = rule.get("kind")
    if not isinstance(kind, str) or kind not in RULE_KINDS:
        return
    try:
        model = ANY_RULE.validate_python({**rule, "name": "x"})
    except ValidationError:
        return  # reported by the schema
    candidates = [n for n in names if n in accounts] if names else list(accounts)
    if not candidates or any(unsupported(model, accounts[n]) is None for n in candidates):
        return
    why = "; ".join(f"{n} ({accounts[n]}): {unsupported(model, accounts[n])}" for n in candidates)
    add(("rules", index, "kind"), f"no account can run a {kind} rule: {why}")


def channel_url_problem(url: str) -> str | None:
    """Why apprise cannot use `url`, without ever repeating the URL (it embeds secrets)."""
    if not url.strip():
        return "the channel URL is empty"
    if not apprise.Apprise().add(url):
        scheme = url.split("://", 1)[0] if "://" in url else "(none)"
        return (
            f"apprise does not recognise this URL (scheme '{scheme[:20]}'); "
            "use an apprise URL such as slack://..., mailto://..., json://..."
        )
    return None
