"""A PostgreSQL server for the tests: the one TEST_POSTGRES_URL names (.ci/run starts
Debian's cluster and sets it), else the local cluster on 127.0.0.1:5432, started with
pg_ctlcluster if it is installed but down. Each test gets a database of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

ENV = "TEST_POSTGRES_URL"
LOCAL = "postgresql://postgres:dialwatch@127.0.0.1:5432/postgres"


def _reachable(url: str) -> str | None:
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def server_url() -> str:
    """The admin URL of a running server; skips the test (fails it in CI) if none."""
    url = os.environ.get(ENV, LOCAL)
    problem = _reachable(url)
    if problem and ENV not in os.environ and shutil.which("pg_ctlcluster"):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"],
            capture_output=True,
            check=False,
        )
        problem = _reachable(url)
    if problem:
        message = f"no PostgreSQL server at {ENV} or {LOCAL}: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (.ci/run must start one)")
        pytest.skip(f"{message}; .ci/run installs and starts one")
    return url


PASSWORD_MARK = "-PG-SECRET"  # in every test role's password, to look for in outputs


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server, owned by a new role with a password of its
    own; both dropped afterwards. Yields the URL dialwatch connects with."""
    name = f"dialwatch_test_{uuid.uuid4().hex[:12]}"
    password = f"pw{uuid.uuid4().hex[:8]}{PASSWORD_MARK}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {name}')
    server = admin_url.split("@", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql://{name}:{password}@{server}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {name}")
