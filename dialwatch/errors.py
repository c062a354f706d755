"""Every error dialwatch raises on purpose.

    DialwatchError
    ├── ConfigError            settings or rules file invalid; fix the file, retrying won't help
    ├── StateUnavailable       the state store cannot be reached (PostgreSQL down)  retryable
    ├── LeaseLost              another replica holds the account now; write nothing for it
    └── ProviderError          a billing API call failed; carries the URL (never the key)
        ├── TransportError     connection refused/reset, timeout           retryable
        ├── ServerError        HTTP 5xx                                    retryable
        ├── RateLimited        HTTP 429, with the server's Retry-After     retryable
        ├── AuthError          HTTP 401/403: key missing, wrong or revoked not retryable
        ├── RequestRejected    another HTTP 4xx                            not retryable
        └── BadResponse        a body that is not the documented JSON      retryable

Errors are translated where they enter (aiohttp exceptions become ProviderErrors in
`providers/http.py`; a lost database connection becomes StateUnavailable in the store),
and no message ever contains a secret.
"""

from __future__ import annotations

from dataclasses import dataclass


class DialwatchError(Exception):
    """Base class of dialwatch's own errors."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, pointing at where it is."""

    file: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.key}: {self.message}"


class ConfigError(DialwatchError):
    """The settings or the rules file are invalid; each issue says where and why."""

    def __init__(self, issues: list[ConfigIssue] | str) -> None:
        self.issues = issues if isinstance(issues, list) else []
        text = issues if isinstance(issues, str) else "\n".join(map(str, issues))
        super().__init__(text)


class StateUnavailable(DialwatchError):
    """The state store cannot be reached or answered with a connection error; whatever
    was being written was not committed, and trying again later can help."""

    retryable = True


class LeaseLost(DialwatchError):
    """A write for an account was refused: this replica's lease on it is no longer
    current (another replica took the account over). Nothing was written."""

    def __init__(self, account: str) -> None:
        self.account = account
        super().__init__(f"the lease on account {account!r} is held by another replica now")


class ProviderError(DialwatchError):
    """A billing API request failed. `retryable` says whether trying again can help."""

    retryable = False
    reason = "error"

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{message} ({url}{f', HTTP {status}' if status else ''})")


class TransportError(ProviderError):
    retryable = True
    reason = "transport"


class ServerError(ProviderError):
    retryable = True
    reason = "server_error"


class RateLimited(ProviderError):
    retryable = True
    reason = "rate_limited"

    def __init__(self, message: str, *, url: str, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(message, url=url, status=429)


class AuthError(ProviderError):
    reason = "auth"


class RequestRejected(ProviderError):
    reason = "rejected"


class InternalError(ProviderError):
    """A check failed inside dialwatch (a bug, or data the store refused): counted and
    shown as a failed check, so dialwatch-unhealthy covers it too."""

    reason = "internal"

    def __init__(self, error: Exception) -> None:
        self.url, self.status = "", None
        Exception.__init__(self, f"{type(error).__name__}: {error}")


class BadResponse(ProviderError):
    retryable = True
    reason = "bad_response"
