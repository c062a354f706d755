"""Service settings from the environment (DIALWATCH_*), a .env file, or /run/secrets."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from dialwatch.errors import ConfigError
from dialwatch.units import parse_duration

SECRETS_DIR = Path("/run/secrets")


def check_interval(value: object) -> timedelta:
    delta = parse_duration(value)
    if delta < timedelta(seconds=1):
        raise ValueError("must be at least 1s")
    return delta


def _text(value: object) -> object:
    return str(value) if isinstance(value, Path) else value


def _lease_ttl(value: object) -> timedelta:
    delta = parse_duration(value)
    if delta < timedelta(seconds=3):
        raise ValueError("must be at least 3s")
    return delta


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | Path) -> bool:
    """Whether a DIALWATCH_STATE value names a PostgreSQL database (else a SQLite file)."""
    return str(location).startswith(POSTGRES_SCHEMES)


def default_replica(location: str | Path = "") -> str:
    """This process's name in a cluster: its host name and pid. A SQLite file is one
    host's, so there it is the host name alone: a restarted process is the same replica
    and takes its accounts back at once instead of waiting for its old leases to lapse."""
    host = socket.gethostname()
    return f"{host}-{os.getpid()}" if is_postgres(location) else host


def check_base_url(value: str) -> str:
    """Allow https anywhere, http only to loopback, so a key never crosses a network in clear."""
    url = URL(value)
    if url.scheme == "https" and url.host:
        return value.rstrip("/")
    if url.scheme == "http" and url.host and is_loopback(url.host):
        return value.rstrip("/")
    if url.scheme == "http":
        raise ValueError(
            "plain http:// is only allowed to a loopback host (127.0.0.1, ::1, localhost); "
            "use https:// so the API key is not sent in clear text"
        )
    raise ValueError("must be an https:// URL, e.g. https://getdial.ai")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """How the service runs; see the README's configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix="DIALWATCH_", env_file=".env", extra="ignore", frozen=True
    )

    api_key: SecretStr | None = None
    base_url: str = "https://getdial.ai"
    rules: Path = Path("rules.yaml")
    interval: Annotated[timedelta, PlainValidator(check_interval)] = timedelta(seconds=60)
    # A SQLite file path, or a PostgreSQL URL (postgresql://user:password@host/db) that
    # several replicas share. A SecretStr: a URL may carry a password.
    state: Annotated[SecretStr, BeforeValidator(_text)] = SecretStr("dialwatch.db")
    replica_name: str | None = Field(
        default=None, alias="DIALWATCH_REPLICA", min_length=1, max_length=128
    )
    lease_ttl: Annotated[timedelta, PlainValidator(_lease_ttl)] = timedelta(seconds=30)
    outbox_expiry: Annotated[timedelta, PlainValidator(check_interval)] = timedelta(hours=24)
    ledger_overlap: Annotated[timedelta, PlainValidator(check_interval)] = timedelta(minutes=10)
    # Per provider, shared by its accounts: requests in flight, and started per second
    # (0: no limit). 10,000 Dial accounts at 60 s ask about 333 a second.
    api_concurrency: int = Field(default=32, ge=0)
    api_rate: float = Field(default=500.0, ge=0)
    listen: str = "0.0.0.0:9090"
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Where users reach this service's status page (Alertmanager's generatorURL links).
    external_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("external_url")
    @classmethod
    def _external_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = URL(value.strip())
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                "must be the status page's address, e.g. https://dialwatch.example.com"
            )
        return str(url).rstrip("/")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value.strip().lower() == "off":
            return "off"
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError('must be HOST:PORT (e.g. 0.0.0.0:9090, [::]:9090) or "off"')
        return value

    @property
    def replica(self) -> str:
        """DIALWATCH_REPLICA, or by default the host name (and pid, for PostgreSQL)."""
        return self.replica_name or default_replica(self.state.get_secret_value())

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """Where the HTTP endpoints listen, or None when DIALWATCH_LISTEN is off."""
        if self.listen == "off":
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format:
            return self.log_format
        return "console" if sys.stdout.isatty() else "json"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; raises ConfigError naming the variable at fault."""
    try:
        if SECRETS_DIR.is_dir():
            return Settings(_secrets_dir=SECRETS_DIR, **overrides)
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"DIALWATCH_{'_'.join(str(p) for p in err['loc']).upper()}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
