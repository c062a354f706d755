"""structlog set-up: JSON or console lines, with every known secret masked.

Secrets are kept out of log calls in the first place; the redacting processor is the
second line of defence (an error message from a library that quoted a URL, say).
Tracebacks are rendered without local variables, which could hold keys.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger
from yarl import URL

MASK = "***"


class Redactor:
    """Knows the secrets in play and masks them in any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str) -> None:
        if len(secret) >= 4:
            self._secrets.add(secret)

    def add_url(self, url: str) -> None:
        """A channel URL and the parts of it that carry tokens or passwords."""
        self.add(url)
        try:
            parsed = URL(url)
        except ValueError:
            return
        for part in _url_secrets(parsed):
            self.add(part)

    def redact(self, text: str) -> str:
        # Longest first, so a URL is masked whole before its parts.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        return {key: self._scrub(value) for key, value in event.items()}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value


def _url_secrets(url: URL) -> Iterable[str]:
    if url.password:
        yield url.password
    if url.user and url.password:
        yield f"{url.user}:{url.password}"
    # Webhook tokens live in the path (slack://T000/B000/XXXX) and in query values.
    for segment in url.path.split("/"):
        if len(segment) >= 8:
            yield segment
    if url.host and url.scheme not in ("http", "https", "json", "xml", "form", "mailto", "mailtos"):
        yield url.host  # slack://TOKEN_A/..., discord://WEBHOOK_ID/...: the "host" is a token
    for value in url.query.values():
        if len(value) >= 8 and "@" not in value:
            yield value


REDACTOR = Redactor()


def configure_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Set up structlog for the whole process; safe to call again (tests do)."""
    renderer: Any
    if fmt == "json":
        exceptions: Any = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exceptions,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    # apprise logs through the standard library, sometimes with URL parts: dialwatch
    # reports each delivery itself, redacted, so apprise's own lines are dropped.
    apprise_log = logging.getLogger("apprise")
    apprise_log.handlers = [logging.NullHandler()]
    apprise_log.propagate = False
