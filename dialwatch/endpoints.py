"""The service's HTTP side: /healthz, /readyz, /metrics and the status page at /."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dialwatch.service import Watcher
from dialwatch.status_page import render_status_page

WATCHER: web.AppKey[Watcher] = web.AppKey("watcher", Watcher)
INTERVAL: web.AppKey[timedelta] = web.AppKey("interval", timedelta)
# A check with every retry and backoff takes about two minutes at worst.
SLOWEST_CHECK = timedelta(minutes=2)


def make_app(watcher: Watcher, interval: timedelta) -> web.Application:
    app = web.Application()
    app[WATCHER] = watcher
    app[INTERVAL] = interval
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
    """200 while the check loop is alive: it started an iteration recently."""
    watcher, interval = request.app[WATCHER], request.app[INTERVAL]
    tick = watcher.health.loop_tick
    now = watcher.clock.now()
    if tick is None:
        return web.Response(status=503, text="starting: no check has begun yet\n")
    if now - tick > interval + SLOWEST_CHECK:
        return web.Response(
            status=503, text=f"stalled: the check loop last ran at {tick:%Y-%m-%dT%H:%M:%SZ}\n"
        )
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    """200 while the last successful check is younger than three intervals."""
    watcher, interval = request.app[WATCHER], request.app[INTERVAL]
    health = watcher.health
    now = watcher.clock.now()
    if health.last_success is None:
        reason = health.last_error or "no check has finished yet"
        return web.Response(status=503, text=f"not ready: no successful check yet ({reason})\n")
    age = now - health.last_success
    if age > 3 * interval:
        return web.Response(
            status=503,
            text=f"not ready: last successful check {int(age.total_seconds())}s ago "
            f"(more than 3 intervals); last error: {health.last_error or 'none'}\n",
        )
    return web.Response(text=f"ready: last successful check {int(age.total_seconds())}s ago\n")


async def _metrics(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    body = watcher.metrics.render(watcher.store, list(watcher.rules.channels))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    html = render_status_page(watcher, watcher.clock.now())
    return web.Response(text=html, content_type="text/html")
