"""Where each part of a YAML document came from, so every problem points at file, line,
column and key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from dialwatch.errors import ConfigIssue

Marks = dict[tuple[Any, ...], tuple[int, int]]


@dataclass
class Source:
    """A YAML document as plain data, with where each path came from."""

    data: Any
    marks: Marks
    issues: list[ConfigIssue]


def issue_at(filename: str, node: yaml.Node, path: tuple[Any, ...], message: str) -> ConfigIssue:
    mark = node.start_mark
    return ConfigIssue(filename, mark.line + 1, mark.column + 1, dotted(path), message)


def locate(marks: Marks, loc: tuple[Any, ...]) -> tuple[int, int]:
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return (1, 1)


def dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(file)"
