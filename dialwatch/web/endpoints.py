"""The service's HTTP side: /healthz, /readyz, /metrics and the status page at /."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dialwatch.pipeline.cycle import Watcher
from dialwatch.rules.schema import delivery_keys
from dialwatch.web.metrics import Metrics
from dialwatch.web.status_page import render_status_page

Watchers = Callable[[], list[Watcher]]
StateProblem = Callable[[], str | None]
WATCHERS: web.AppKey[Watchers] = web.AppKey("watchers")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
STATE: web.AppKey[StateProblem] = web.AppKey("state")
CHECKED: web.AppKey[Watchers] = web.AppKey("checked")
# A check with every retry and backoff takes about two minutes at worst.
SLOWEST_CHECK = timedelta(minutes=2)


def make_app(
    watchers: Watchers,
    metrics: Metrics,
    state_problem: StateProblem = lambda: None,
    checked: Watchers | None = None,
) -> web.Application:
    """The endpoints over the accounts `watchers()` returns (it changes on reload), of
    which this replica checks `checked()` (default: all), the service's `metrics`, and
    `state_problem()`: why the replica cannot be ready whatever its accounts (the state
    store is unreachable, or it is still taking its leases), if so."""
    app = web.Application()
    app[WATCHERS] = watchers
    app[CHECKED] = checked or watchers
    app[METRICS] = metrics
    app[STATE] = state_problem
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _status)
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _healthz(request: web.Request) -> web.Response:
    """200 while the check loop of every account this replica holds is alive: it started
    an iteration recently."""
    problems = []
    for watcher in request.app[CHECKED]():
        tick = watcher.health.loop_tick
        if tick is None:
            problems.append(f"{watcher.account}: starting, no check has begun yet")
        elif watcher.clock.now() - tick > watcher.interval + SLOWEST_CHECK:
            problems.append(
                f"{watcher.account}: stalled, the check loop last ran at {tick:%Y-%m-%dT%H:%M:%SZ}"
            )
    if problems:
        return web.Response(status=503, text="\n".join(problems) + "\n")
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    """200 while the state store answers and every account this replica checks had a
    successful check within three intervals."""
    lines, ready = [], True
    problem = request.app[STATE]()
    if problem is not None:
        ready = False
        lines.append(f"not ready: {problem}")
    for watcher in request.app[CHECKED]():
        health, account = watcher.health, watcher.account
        if health.last_success is None:
            ready = False
            reason = health.last_error or "no check has finished yet"
            lines.append(f"{account}: not ready: no successful check yet ({reason})")
            continue
        age = int((watcher.clock.now() - health.last_success).total_seconds())
        if age > 3 * watcher.interval.total_seconds():
            ready = False
            lines.append(
                f"{account}: not ready: last successful check {age}s ago "
                f"(more than 3 intervals); last error: {health.last_error or 'none'}"
            )
        else:
            lines.append(f"{account}: ready: last successful check {age}s ago")
    return web.Response(status=200 if ready else 503, text="\n".join(lines) + "\n")


async def _metrics(request: web.Request) -> web.Response:
    watchers = request.app[WATCHERS]()
    channels = watchers[0].rules.channels
    keys = [key for name in channels for key in delivery_keys(channels, name)]
    body = await request.app[METRICS].render(watchers[0].store, keys, watchers[0].clock.now())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    watchers = request.app[WATCHERS]()
    search = request.query.get("q", "").strip()[:200]
    html = await render_status_page(watchers, watchers[0].clock.now(), search or None)
    return web.Response(text=html, content_type="text/html")
