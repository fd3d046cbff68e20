"""HTTP for orchestrators and Prometheus: /healthz, /readyz, /metrics (aiohttp).

It listens on 127.0.0.1 unless ARCHIVER_HTTP_HOST says otherwise (containers set 0.0.0.0),
and closes any connection that has not sent a complete request within ARCHIVER_HTTP_TIMEOUT
(aiohttp's keep-alive timeout, which since 3.14 also covers a connection's first request):
half-sent requests cannot pile up.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer import health

STATE: web.AppKey[health.State] = web.AppKey("state", health.State)


async def healthz(request: web.Request) -> web.Response:
    """503 when the last successful sweep is too old or the subscription is down."""
    state = request.app[STATE]
    problems = state.liveness_problems()
    body = {"status": state.status(), "mode": state.mode, "problems": problems}
    return web.json_response(body, status=503 if problems else 200)


async def readyz(request: web.Request) -> web.Response:
    """Ready once both servers answer and the start-up checks ran; reports the mode and the
    periodic jobs (a failed job is reported, it does not make the process unready)."""
    state = request.app[STATE]
    ready = state.redis_ok and state.database_ok and state.mode != "starting"
    body = {
        "ready": ready,
        "mode": state.mode,
        "degraded": state.mode == "degraded",
        "failed_jobs": state.failed_jobs(),
        "jobs": {name: job.snapshot() for name, job in sorted(state.jobs.items())},
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def app(state: health.State) -> web.Application:
    application = web.Application()
    application[STATE] = state
    application.add_routes(
        [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
    )
    return application


async def serve(state: health.State, host: str, port: int, idle_s: float) -> web.AppRunner:
    """Serve until `cleanup`; connections without a complete request close after `idle_s`."""
    runner = web.AppRunner(app(state), access_log=None, keepalive_timeout=idle_s)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
