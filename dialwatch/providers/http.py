"""JSON over HTTPS with timeouts and retries; every failure becomes a ProviderError.

Retries cover what can pass by itself: connection errors, timeouts, 5xx and bodies
that are not JSON, with exponential backoff and full jitter; a 429 waits for the
server's Retry-After. A 401/403 or another 4xx is final for this check.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Annotated, Self, TypeVar

import aiohttp
import structlog
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from dialwatch.errors import (
    AuthError,
    BadResponse,
    ProviderError,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from dialwatch.units import to_minor

log = structlog.get_logger("dialwatch.api")

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


# An integer a response may carry: strict (no "12" or 12.0), and within 64 bits, since
# that is what the state store keeps. Past that it is a response off the contract.
Int64 = Annotated[int, Field(strict=True, ge=-(2**63), lt=2**63)]


class Lenient(BaseModel):
    """A response model: unknown fields are the API growing, not an error."""

    model_config = ConfigDict(extra="ignore")


class Priced(Lenient):
    """A response model with an `amount` sent as a float in currency units, held exactly
    as `minor` units of `unit`. A fraction of the smallest unit fails validation (so the
    response is a BadResponse naming the field): money is never rounded."""

    amount: Decimal  # read from the JSON text, so 20.99 is exactly 20.99
    currency: str
    _minor: int = PrivateAttr(0)

    @property
    def unit(self) -> str:
        return self.currency.upper()

    @property
    def minor(self) -> int:
        return self._minor

    @model_validator(mode="after")
    def _exact(self) -> Self:
        self._minor = to_minor(self.amount, self.unit)
        if not -(2**63) <= self._minor < 2**63:
            raise ValueError(f"amount {self.amount} is too large to be an amount of money")
        return self


class RequestLimit:
    """What one provider's API is asked at once, shared by all its accounts: at most
    `concurrency` requests in flight and `per_second` started a second (a leaky bucket,
    aiolimiter's), so 10,000 accounts never burst the API; 0 lifts either."""

    def __init__(self, concurrency: int, per_second: float) -> None:
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self._rate = AsyncLimiter(per_second, 1) if per_second else None

    async def __aenter__(self) -> None:
        if self._slots is not None:
            await self._slots.acquire()
        if self._rate is not None:
            try:
                await self._rate.acquire()
            except BaseException:
                self._release()
                raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()


UNLIMITED = RequestLimit(0, 0)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 60.0
    timeout: float = 20.0


class ApiClient:
    """GETs JSON from one API with one set of credentials."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        headers: Mapping[str, str],
        *,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        observe: Callable[[str, float], None] | None = None,
        error_text: Callable[[bytes], str | None] | None = None,
        limit: RequestLimit = UNLIMITED,
    ) -> None:
        """`observe(path, seconds)` is told each request's latency (for metrics);
        `error_text(body)` reads the provider's error message out of an error body;
        `limit` is the provider's, shared with its other accounts."""
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter
        self._observe = observe
        self._error_text = error_text
        self._limit = limit

    def url(self, path: str) -> str:
        return f"{self._base_url}{path}"

    async def get(
        self, path: str, parse: Callable[[bytes], T], params: Mapping[str, str] | None = None
    ) -> T:
        """GET `path` and `parse` the body of a 200, retrying as the policy allows.

        `parse` validates raw JSON bytes (pydantic's `model_validate_json`, which decodes
        and checks in one pass); its ValidationError becomes a BadResponse saying what
        was expected. It runs inside the retry loop, so a body off the documented shape
        is retried like a truncated one. Raises ProviderError.
        """
        url = self.url(path)
        policy = self._policy
        for attempt in range(1, policy.attempts + 1):
            try:
                return _parse(parse, await self._get_once(path, params), url)
            except ProviderError as exc:
                delay = self._delay_before_retry(exc, attempt)
                if delay is None:
                    raise
                log.warning(
                    "api.retry",
                    url=url,
                    reason=exc.reason,
                    error=str(exc),
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                )
                await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _delay_before_retry(self, exc: ProviderError, attempt: int) -> float | None:
        policy = self._policy
        if not exc.retryable or attempt >= policy.attempts:
            return None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            # Waiting longer than this inside one check would stall the service:
            # give up now and let the next interval try again.
            wait: float = exc.retry_after
            return wait if wait <= policy.max_retry_after else None
        backoff: float = min(policy.backoff_cap, policy.backoff_base * 2 ** (attempt - 1))
        return self._jitter() * backoff

    async def _get_once(self, path: str, params: Mapping[str, str] | None) -> _Body:
        url = self.url(path)
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout)
        async with self._limit:  # the wait for a turn is not the API's latency
            started = time.perf_counter()
            try:
                async with self._session.get(
                    url,
                    params=params,
                    headers=self._headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    body = await response.read()
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    content_type = response.content_type
            except TimeoutError as exc:
                raise TransportError(f"timed out after {self._policy.timeout:g}s", url=url) from exc
            except aiohttp.ClientError as exc:
                raise TransportError(f"connection failed: {_describe(exc)}", url=url) from exc
            finally:
                if self._observe is not None:
                    self._observe(path, time.perf_counter() - started)
        return _interpret(url, status, content_type, body, retry_after, self._describe_error)

    def _describe_error(self, body: bytes) -> str:
        own = self._error_text(body) if self._error_text else None
        return own or _error_text(body)


@dataclass(frozen=True)
class _Body:
    content: bytes
    content_type: str


class AccountReader:
    """What every provider module's reader is: one account, read through one ApiClient."""

    provider: str  # set by each provider's class

    def __init__(self, account: str, client: ApiClient) -> None:
        self.account = account
        self._client = client


def _parse(parse: Callable[[bytes], T], body: _Body, url: str) -> T:
    try:
        return parse(body.content)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise BadResponse(
                f"expected a JSON body, got {body.content_type or 'no content type'} "
                f"({len(body.content)} bytes starting {_snippet(body.content)!r}): "
                f"{exc.errors()[0]['msg']}",
                url=url,
            ) from exc
        raise BadResponse(f"unexpected response: {describe_validation(exc)}", url=url) from exc


def describe_validation(exc: ValidationError, limit: int = 3) -> str:
    """`field: what was expected` for the first few problems, without echoing input."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    ]
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def _interpret(
    url: str,
    status: int,
    content_type: str,
    body: bytes,
    retry_after: str | None,
    error_text: Callable[[bytes], str],
) -> _Body:
    if status in (401, 403):
        raise AuthError(
            f"the API key was rejected ({error_text(body)}): is the key wrong or revoked?",
            url=url,
            status=status,
        )
    if status == 429:
        raise RateLimited(
            f"rate limited; Retry-After {retry_after or 'not given'}",
            url=url,
            retry_after=parse_retry_after(retry_after),
        )
    if status >= 500:
        raise ServerError(f"server error: {error_text(body)}", url=url, status=status)
    if status != 200:
        raise RequestRejected(f"request rejected: {error_text(body)}", url=url, status=status)
    return _Body(body, content_type)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def json_object(body: bytes) -> dict[str, object] | None:
    """`body` as a JSON object, or None."""
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _error_text(body: bytes) -> str:
    """The provider's own error message if the body has one, else a short snippet."""
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _snippet(body) or "empty body"
    if isinstance(decoded, dict):
        error = decoded.get("error") or decoded.get("errors") or decoded.get("detail")
        if isinstance(error, dict):
            return str(error.get("message") or json.dumps(error)[:200])
        if error:
            return str(error)[:200]
    return _snippet(body)


def _snippet(body: bytes, size: int = 60) -> str:
    return " ".join(body[:size].decode("utf-8", "replace").split())


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {exc.os_error.strerror or exc.os_error}"
    return type(exc).__name__
