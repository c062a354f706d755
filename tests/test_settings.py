"""Settings from the environment: names users depend on, and refusals that protect keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from dialwatch import settings as settings_module
from dialwatch.errors import ConfigError
from dialwatch.settings import load_settings


def test_settings_read_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """DIALWATCH_* variables set key, URL, rules, interval, state and logging."""
    for name, value in {
        "DIALWATCH_API_KEY": "sk_live_x",
        "DIALWATCH_BASE_URL": "http://127.0.0.1:8080/",
        "DIALWATCH_RULES": "/etc/dialwatch/rules.yaml",
        "DIALWATCH_INTERVAL": "1m",
        "DIALWATCH_STATE": "/data/dialwatch.db",
        "DIALWATCH_LOG_FORMAT": "json",
        "DIALWATCH_LOG_LEVEL": "DEBUG",
        "DIALWATCH_EXTERNAL_URL": "https://dialwatch.example.com/status/",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "sk_live_x"
    assert settings.base_url == "http://127.0.0.1:8080"
    assert str(settings.rules) == "/etc/dialwatch/rules.yaml"
    assert settings.interval == timedelta(minutes=1)
    assert settings.state.get_secret_value() == "/data/dialwatch.db"
    assert (settings.effective_log_format, settings.log_level) == ("json", "debug")
    assert settings.external_url == "https://dialwatch.example.com/status"


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("DIALWATCH_BASE_URL", "http://getdial.ai", "plain http:// is only allowed to a loopback"),
        ("DIALWATCH_BASE_URL", "ftp://getdial.ai", "must be an https:// URL"),
        ("DIALWATCH_INTERVAL", "0.5", "must be at least 1s"),
        ("DIALWATCH_INTERVAL", "often", "is not a duration"),
        ("DIALWATCH_LOG_FORMAT", "xml", "Input should be 'json' or 'console'"),
        ("DIALWATCH_EXTERNAL_URL", "dialwatch.example.com", "must be the status page's address"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, error: str
) -> None:
    """A bad value fails at start with the variable's name and what is valid."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as caught:
        load_settings()
    assert error in str(caught.value)


def test_api_key_never_appears_in_settings_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when validation fails, the key's value is not echoed."""
    monkeypatch.setenv("DIALWATCH_API_KEY", "sk_live_dont_print_me")
    monkeypatch.setenv("DIALWATCH_INTERVAL", "never")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "sk_live_dont_print_me" not in str(caught.value)
    monkeypatch.delenv("DIALWATCH_INTERVAL")
    assert "sk_live_dont_print_me" not in repr(load_settings())


def test_api_key_can_come_from_a_secrets_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Docker/Kubernetes secret file named dialwatch_api_key provides the key."""
    (tmp_path / "dialwatch_api_key").write_text("sk_live_from_file")
    monkeypatch.setattr(settings_module, "SECRETS_DIR", tmp_path)
    settings = load_settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "sk_live_from_file"
