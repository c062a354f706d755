"""Loading a rules file: YAML with positions, ${VAR} substitution, strict validation.

Every problem is reported as a ConfigIssue pointing at file, line, column and key,
and all of them are collected before failing, so one `validate` run lists them all.
"""

from __future__ import annotations

import difflib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dialwatch.errors import ConfigError, ConfigIssue
from dialwatch.rules.checks import cross_check
from dialwatch.rules.positions import Source, dotted, issue_at, locate
from dialwatch.rules.schema import (
    CHANNEL_KINDS,
    INHERITED,
    RULE_KINDS,
    Account,
    AlertMatcher,
    Channel,
    Defaults,
    Digest,
    Inhibit,
    Match,
    Route,
    RulesFile,
)

# ${VAR}, or ${VAR:-default} (the default when VAR is unset or empty), as in a shell.
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_rules(path: Path | str, env: Mapping[str, str] | None = None) -> RulesFile:
    """Read and validate a rules file; raises ConfigError listing every problem."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{filename}: no rules file here. Make one with `dialwatch init --provider dial "
            "--channel slack` (or see `dialwatch init --example`), or point DIALWATCH_RULES "
            "or --rules at yours"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{filename}: cannot read the rules file: {exc.strerror}") from exc
    return parse_rules(text, filename, os.environ if env is None else env)


def parse_rules(text: str, filename: str, env: Mapping[str, str]) -> RulesFile:
    # Where each key came from is read only for a file with a problem: a file without
    # one (every start of a running service) skips the positions of every key, which
    # at 10,000 accounts are 50,000 paths and ~10 MB held while it is checked.
    rules_file = _parsed(text, filename, env, located=False)
    if rules_file is None:
        _parsed(text, filename, env, located=True)  # raises, saying where
        raise AssertionError("a rules file failed once and passed once")  # pragma: no cover
    return rules_file


def _parsed(text: str, filename: str, env: Mapping[str, str], located: bool) -> RulesFile | None:
    """The rules file, or None for a problem when not `located`; raises ConfigError
    with every problem at its line and key when `located`."""
    source = _compose(text, filename, env, located)
    if source.issues and source.data is None:
        raise ConfigError(source.issues)
    if not isinstance(source.data, dict):
        raise ConfigError(
            [ConfigIssue(filename, 1, 1, "(file)", "expected a mapping with channels and rules")]
        )
    data = _apply_defaults(source.data)
    issues = source.issues + cross_check(data, source, filename)
    try:
        rules_file = RulesFile.model_validate(data)
    except ValidationError as exc:
        if not located:
            return None
        issues += [_issue_from_pydantic(err, source, filename) for err in exc.errors()]
        rules_file = None
    if issues:
        if not located:
            return None
        kept = _without_cascades(issues)
        raise ConfigError(sorted(set(kept), key=lambda i: (i.line, i.column, i.key)))
    assert rules_file is not None
    return rules_file


def _yaml_problem(problem: str, text: str, line: int, col: int) -> str:
    """PyYAML's message, with the line it is about and a caret under the column, and
    what usually causes it."""
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    hint = ""
    if (
        "indent" in problem
        or "mapping values are not allowed" in problem
        or ("expected <block end>" in problem)
    ):
        hint = (
            "\n  hint: check the indentation: keys of one mapping, and the `- ` items of one "
            "list, start at the same column; use spaces, not tabs"
        )
    elif "found character '\\t'" in problem:
        hint = "\n  hint: a tab: YAML indents with spaces only"
    elif "could not find expected ':'" in problem:
        hint = "\n  hint: a key needs `key: value` (a colon and a space)"
    return f"{problem}\n  | {shown}\n  | {' ' * (col - 1)}^{hint}"


def _without_cascades(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """One error per mistake: an unset variable or an unknown rule kind explains every
    other problem found under the same key (an empty URL, a template of unknown fields)."""
    causes = [
        i
        for i in issues
        if "environment variable ${" in i.message or i.message.startswith("unknown rule kind")
    ]
    # What a cause explains: everything under its entry (a rule, a channel, an account).
    roots = {".".join(c.key.replace("[", ".[").split(".")[:2]).replace(".[", "[") for c in causes}

    def explained(issue: ConfigIssue) -> bool:
        if issue in causes:
            return False
        return any(issue.key == r or issue.key.startswith((f"{r}.", f"{r}[")) for r in roots)

    return [i for i in issues if not explained(i)]


def _compose(text: str, filename: str, env: Mapping[str, str], located: bool) -> Source:
    source = Source(None, {}, [])
    # libyaml's parser: a third of the time of PyYAML's own, and less memory (10,000
    # accounts: 1.1 s and 53 MB against 3.1 s and 72 MB); a file it refuses is parsed
    # again by PyYAML's, whose problems are worded for people.
    loader: yaml.CSafeLoader | yaml.SafeLoader = yaml.CSafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError:
        loader.dispose()
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            message = _yaml_problem(str(exc.problem), text, line, col)
            source.issues.append(ConfigIssue(filename, line, col, "(yaml)", message))
            return source
    finally:
        loader.dispose()
    if node is None:
        return source

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> Any:
        if located:
            source.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                key_path = (*path, key)
                if key in result:
                    source.issues.append(
                        issue_at(filename, key_node, key_path, "duplicate key; each key once")
                    )
                if located:
                    source.marks[key_path] = (
                        key_node.start_mark.line + 1,
                        key_node.start_mark.column + 1,
                    )
                result[key] = walk(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(node.value)]
        value = loader.construct_object(node)
        if isinstance(value, str):
            value = _substitute(value, node, path, filename, env, source.issues)
        return value

    data = walk(node, ())
    if not located:
        # The data was made in the gaps between the nodes (at 10,000 accounts, 7 MB
        # among 36 MB of nodes), where it would keep their memory from ever being
        # given back. Copied out through one flat buffer once the nodes are gone, it is
        # laid out anew in memory of its own: parsing 10,000 accounts now leaves 32 MB
        # (the channel checks' apprise plugins included) instead of 54 MB.
        node, loader.constructed_objects = None, {}
        data = pickle.loads(pickle.dumps(data, pickle.HIGHEST_PROTOCOL))  # noqa: S301 (its own bytes)
    source.data = data
    return source


def _substitute(
    value: str,
    node: yaml.Node,
    path: tuple[Any, ...],
    filename: str,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        if default is not None:
            return env.get(name) or default
        if name not in env:
            issues.append(
                issue_at(
                    filename, node, path, f"environment variable ${{{name}}} is not set; set it"
                )
            )
            return ""
        return env[name]

    return _VAR.sub(replace, value)


def _apply_defaults(data: dict[Any, Any]) -> dict[Any, Any]:
    defaults = data.get("defaults")
    rules = data.get("rules")
    if not isinstance(defaults, dict) or not isinstance(rules, list):
        return data
    try:
        Defaults.model_validate(defaults)
    except ValidationError:
        return data  # reported once, at defaults, rather than again for every rule
    merged = [
        {**{k: defaults[k] for k in INHERITED if k in defaults}, **rule}
        if isinstance(rule, dict)
        else rule
        for rule in rules
    ]
    return {**data, "rules": merged}


def _issue_from_pydantic(err: Any, source: Source, filename: str) -> ConfigIssue:
    loc = tuple(err["loc"])
    # A discriminated union puts the rule kind into the location: rules.0.balance_below.x
    if len(loc) >= 3 and loc[0] == "rules" and loc[2] in RULE_KINDS:
        kind_model: type[BaseModel] | None = RULE_KINDS[loc[2]]
        loc = loc[:2] + loc[3:]
    elif len(loc) >= 3 and loc[0] == "channels" and loc[2] in CHANNEL_KINDS:
        kind_model = CHANNEL_KINDS[loc[2]]
        loc = loc[:2] + loc[3:]
    else:
        kind_model = None
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "kind")
    line, col = locate(source.marks, loc)
    return ConfigIssue(filename, line, col, dotted(loc), _explain(err, loc, kind_model))


def _explain(err: Any, loc: tuple[Any, ...], kind_model: type[BaseModel] | None) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1], kind_model)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown key; {hint}valid keys here: {', '.join(valid)}"
    if kind == "union_tag_invalid":
        given = str(err.get("ctx", {}).get("tag", ""))
        close = difflib.get_close_matches(given, list(RULE_KINDS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown rule kind; {hint}valid kinds: {', '.join(RULE_KINDS)}"
    if kind == "union_tag_not_found":
        return f"a rule needs a kind; valid kinds: {', '.join(RULE_KINDS)}"
    if kind == "missing":
        return "required key is missing"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")


# The model of each entry of a top-level section (a mapping's values, a list's items).
_ENTRIES: dict[str, type[BaseModel]] = {
    "accounts": Account, "channels": Channel, "digest": Digest, "routes": Route,
    "inhibit": Inhibit,
}  # fmt: skip


def _valid_keys(parent: tuple[Any, ...], kind_model: type[BaseModel] | None) -> list[str]:
    """The keys valid where an unknown one was found (under `parent`)."""
    model: type[BaseModel] = RulesFile
    if parent[:1] == ("rules",) and parent[-1:] == ("match",):
        model = Match
    elif parent[:1] in (("routes",), ("inhibit",)) and len(parent) == 3:
        model = AlertMatcher  # a route's match, an inhibit's source or target
    elif kind_model is not None and len(parent) == 2:
        model = kind_model  # a rule of that kind, a channel of that kind
    elif len(parent) == 2 and parent[0] in _ENTRIES:
        model = _ENTRIES[parent[0]]
    elif parent == ("defaults",):
        model = Defaults
    return [field.alias or name for name, field in model.model_fields.items()]
