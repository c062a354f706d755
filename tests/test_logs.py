"""Secrets in channel URLs are masked wherever they would surface in a log line."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from dialwatch.logs import Redactor, configure_logging


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        (
            "slack://T0AAAAAAA/B0BBBBBBB/XXXXXXXXXXXXXXXXXXXXXXXX/#alerts",
            ["T0AAAAAAA", "B0BBBBBBB", "XXXXXXXXXXXXXXXXXXXXXXXX"],
        ),
        ("mailtos://ops:Sup3r-Secret!@smtp.example.com?to=f@example.com", ["Sup3r-Secret!"]),
        ("json://hooks.example.com/hook?+X-Api-Token=tok_9a8b7c6d5e", ["tok_9a8b7c6d5e"]),
        ("discord://123456789012345678/AbCdEfGhIjKlMnOpQrStUvWx", ["AbCdEfGhIjKlMnOpQrStUvWx"]),
    ],
    ids=["slack-tokens", "smtp-password", "custom-header", "discord-webhook"],
)
def test_channel_url_secrets_are_masked_in_any_text(url: str, secrets: list[str]) -> None:
    """The whole URL and each token or password inside it become ***."""
    redactor = Redactor()
    redactor.add_url(url)
    text = f"send failed for {url}; token was {secrets[-1]}"
    masked = redactor.redact(text)
    for secret in secrets:
        assert secret not in masked
    assert masked.startswith("send failed for ***")


def test_log_lines_and_tracebacks_are_masked_without_locals() -> None:
    """A secret in an event field or an exception message is masked; locals are not shown."""
    from dialwatch.logs import REDACTOR

    REDACTOR.add("sk_live_in_a_traceback_0000")
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    log = structlog.get_logger("test")
    api_key = "sk_live_in_a_traceback_0000"
    try:
        raise RuntimeError(f"request with {api_key} failed")
    except RuntimeError:
        log.exception("boom", header=f"Bearer {api_key}")
    line = json.loads(stream.getvalue())
    text = json.dumps(line)
    assert api_key not in text
    assert line["header"] == "Bearer ***"
    frames = line["exception"][0]["frames"]
    assert frames
    assert all("locals" not in frame for frame in frames)  # no local variables rendered
    assert line["exception"][0]["exc_type"] == "RuntimeError"
