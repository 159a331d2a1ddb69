"""The node's small HTTP side: Prometheus ``/metrics`` and ``/healthz`` on ``--metrics-listen``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def make_app(registry: CollectorRegistry, before_scrape: Callable[[], object]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        before_scrape()  # gauges reflect the engine right now, not the last heartbeat
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_http(app: web.Application, address: str) -> tuple[web.AppRunner, int]:
    """Starts ``app`` on HOST:PORT (port 0 picks a free one); returns the runner and the bound port."""
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, int(port))
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, int(bound)
