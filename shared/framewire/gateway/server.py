"""Serving the gateway: uvicorn in a thread of the gateway's process, until it is stopped.

The process's main thread keeps the stop signal (SIGTERM/SIGINT, as every Framewire service)
and, once set, ends open streams, lets uvicorn finish the requests in flight and waits for
pushed frames to be acknowledged.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import uvicorn

from framewire.config import Settings
from framewire.errors import FramewireError
from framewire.gateway.app import create_app, open_state
from framewire.gateway.frames import FramePusher
from framewire.runtime import StopSignal

log = logging.getLogger(__name__)
START_TIMEOUT_S = 30.0
# requests still running at a stop get this long to finish
GRACEFUL_S = 5


def url_file(settings: Settings):  # noqa: ANN201 (a Path)
    """Where a running gateway writes its URL (useful with ``gateway.port`` 0)."""
    return settings.home.resolve() / "gateway.url"


def serve(settings: Settings, stop: StopSignal | None = None) -> None:
    """Serve the API on ``gateway.host``:``gateway.port`` until ``stop`` (or a signal)."""
    stop = stop or StopSignal()
    pusher = FramePusher(settings, stop)
    state = open_state(settings, pusher, stop)
    config = uvicorn.Config(create_app(state), host=settings.gateway.host,
                            port=settings.gateway.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_S, lifespan="off")
    server = uvicorn.Server(config)
    # not the main thread: uvicorn installs no signal handlers, the stop signal keeps them
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    pusher.start()
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise FramewireError(
                    f"the gateway cannot listen on {settings.gateway.host}:"
                    f"{settings.gateway.port} (in use by another process?); set "
                    "FRAMEWIRE_GATEWAY__PORT (or __HOST), see its log above")
            stop.wait(0.05)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        url = f"http://{host}:{port}"
        path = url_file(settings)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(url + "\n")
        log.info("gateway listening", extra={"url": url, "api": f"{url}/api/v1",
                                             "pid": os.getpid()})
        while not stop.wait(0.5):
            if not thread.is_alive():
                raise FramewireError("the gateway's HTTP server stopped; see its log")
    finally:
        stop.set()  # ends the open streams
        server.should_exit = True
        thread.join(GRACEFUL_S + 5)
        pusher.close()
        state.close()
        url_file(settings).unlink(missing_ok=True)
        log.info("gateway stopped")
