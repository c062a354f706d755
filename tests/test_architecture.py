"""The shape ARCHITECTURE.md describes stays true: imports point down the flow, there
are no import circles, the pure stages do no I/O, and every package it names exists."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dialwatch"

# Lowest first. A module may import from its own layer and the layers below it, never
# from a layer above. The first layer holds the shared leaves (and the package root).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "units", "clock", "errors", "logs", "settings", "model"),
    ("providers",),
    ("simulators",),
    ("rules",),
    ("alerting",),
    ("delivery",),
    ("store",),
    ("pipeline",),
    ("cluster",),
    ("web",),
    ("fleet", "runner", "demo", "backtest", "cli", "__main__"),
)
# The pure core: rule evaluation and the alert lifecycle, routing, silences, quiet hours.
PURE = ("dialwatch.rules.evaluate", "dialwatch.rules.time_intervals", "dialwatch.alerting")
IMPURE_IMPORTS = ("aiohttp", "apprise", "sqlite3", "psycopg", "dialwatch.clock", "dialwatch.store")
CLOCK_CALLS = re.compile(
    r"\b(datetime\.now|datetime\.utcnow|time\.time|time\.monotonic|date\.today)\("
)


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(path, package.parent): path for path in sorted(package.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module (of any package) that `path` imports, wherever in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                # `from dialwatch.rules import templates` imports the module templates.
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in modules else node.module


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the dialwatch modules it imports."""
    modules = _modules(package)
    return {
        name: {i for i in _imports(path, modules) if i in modules and i != name}
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS and ARCHITECTURE.md")


def test_there_are_no_import_circles() -> None:
    """No module imports, through any chain, a module that imports it."""
    assert circles(import_graph()) == []


def test_imports_point_down_the_flow() -> None:
    """No module imports from a stage above its own (providers never import rules, the
    store never imports the pipeline, ...)."""
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_pure_stages_do_no_io_and_read_no_clock() -> None:
    """Rule evaluation and alerting import no aiohttp, apprise, SQL or clock."""
    modules = _modules()
    offences = []
    for name, path in modules.items():
        if not name.startswith(PURE):
            continue
        for imported in _imports(path, modules):
            if imported.startswith(IMPURE_IMPORTS):
                offences.append(f"{name} imports {imported}")
        offences += [f"{name} calls {m[1]}()" for m in CLOCK_CALLS.finditer(path.read_text())]
    assert offences == []


def test_only_the_registry_names_the_providers() -> None:
    """Adding a provider is a module in providers/ and a line in its registry: outside
    providers/, simulators/ and the demo, no module imports a provider's own module."""
    provider_modules = {
        f"dialwatch.providers.{p.stem}"
        for p in (PACKAGE / "providers").glob("*.py")
        if p.stem not in ("__init__", "base", "http", "pages")
    }
    outside = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if not module.startswith(("dialwatch.providers", "dialwatch.simulators", "dialwatch.demo"))
        for target in targets & provider_modules
    ]
    assert provider_modules
    assert outside == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_circle_finder_finds_circles(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    """The check above can fail: a planted circle is found, a chain is not."""
    assert circles(graph) == expected


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """A planted upward import (the store importing the pipeline) is reported."""
    package = tmp_path / "dialwatch"
    (package / "store").mkdir(parents=True)
    (package / "pipeline").mkdir()
    (package / "__init__.py").write_text("")
    (package / "store" / "__init__.py").write_text("from dialwatch.pipeline import cycle\n")
    (package / "pipeline" / "__init__.py").write_text("")
    (package / "pipeline" / "cycle.py").write_text("import dialwatch.store\n")
    graph = import_graph(package)
    assert graph["dialwatch.store"] == {"dialwatch.pipeline.cycle"}
    assert layer_of("dialwatch.pipeline.cycle") > layer_of("dialwatch.store")
    assert circles(graph) == [["dialwatch.pipeline.cycle", "dialwatch.store"]]


def test_architecture_md_names_only_packages_that_exist() -> None:
    """Every `dialwatch/...` path ARCHITECTURE.md names is in the tree, and every package
    in the tree is in its code map."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(dialwatch/[\w/.]*)`", text))
    missing = sorted(p for p in named if not (ROOT / p.rstrip("/")).exists())
    assert missing == []
    packages = {
        f"dialwatch/{p.relative_to(PACKAGE).as_posix()}/"
        for p in PACKAGE.rglob("__init__.py")
        for p in [p.parent]
        if p != PACKAGE
    }
    assert sorted(packages - named) == []


def test_a_service_on_sqlite_does_not_load_the_postgresql_driver() -> None:
    """psycopg and its pool take 11 MB: loaded only where a PostgreSQL store is opened
    (or a state file copied into one), not by every `dialwatch` process."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, dialwatch.cli, dialwatch.runner, dialwatch.fleet; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'psycopg', 'psycopg_pool'}))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert loaded.stdout.strip() == "[]"
