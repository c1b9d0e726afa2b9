"""``GET /api/v1/results/stream``: new results as Server-Sent Events, resumable.

Each event is ``event: result``, ``id: <stored_at µs>-<frame id>`` and the result's JSON. A
client that reconnects with ``Last-Event-ID`` gets every result stored after that one, in
order; without it, the results stored from now on. A result is sent once it has been stored
for ``gateway.stream_settle_ms``: a storage transaction that took its ``stored_at`` earlier
but committed later (another storage replica) is visible by then, so going on from the last
position sent misses nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from framewire.gateway.results import StreamPosition, result_json, results_after

if TYPE_CHECKING:
    from framewire.gateway.app import GatewayState

POLL_S = 0.25  # how often the database is asked for new results
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
BATCH = 100
RETRY_MS = 2000  # what EventSource clients wait before reconnecting


def start_position(last_event_id: str | None) -> StreamPosition:
    """Where a new stream starts: after ``Last-Event-ID``, else now (ValueError if bad)."""
    if last_event_id:
        return StreamPosition.parse(last_event_id)
    return StreamPosition(datetime.now(UTC))


async def result_events(state: GatewayState, request: Request, camera: str | None,
                        position: StreamPosition) -> AsyncIterator[bytes]:
    """The stream's bytes until the client leaves or the gateway stops."""
    settle = timedelta(milliseconds=state.settings.gateway.stream_settle_ms)
    yield f"retry: {RETRY_MS}\n\n".encode()
    quiet_since = time.monotonic()
    while not state.stop.is_set and not await request.is_disconnected():
        until = datetime.now(UTC) - settle
        batch = await run_in_threadpool(results_after, state.db, position, until, camera, BATCH)
        for result, row, at in batch:
            data = json.dumps(result_json(result, row), separators=(",", ":"))
            yield f"id: {at.event_id}\nevent: result\ndata: {data}\n\n".encode()
            position = at
        if batch:
            quiet_since = time.monotonic()
            if len(batch) == BATCH:
                continue  # more are waiting: no pause
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"
        await anyio.sleep(POLL_S)
