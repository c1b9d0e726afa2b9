"""The analytics over HTTP: stored events and alerts, their live streams, and each camera's
lines, zones and alert rules.

``GET /events`` and ``GET /alerts`` list what storage keeps (``framewire events`` and
``framewire alerts``, as JSON); ``GET /events/stream`` and ``GET /alerts/stream`` send new
ones as Server-Sent Events (``event: analytics_event`` / ``event: alert``), resumable with
``Last-Event-ID`` like the results' stream (``id: <stored_at µs>-<event id>``, for alerts
``<stored_at µs>-<alert id>.<state>``). ``/cameras/{camera_id}/analytics`` reads and sets a
camera's analytics settings on the control topic (``framewire.ops.analytics``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Body, Header, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from framewire.contracts import CAMERA_ID_PATTERN
from framewire.errors import ConfigError
from framewire.gateway.audit import audit
from framewire.gateway.auth import Operator, Viewer, who
from framewire.gateway.stream import BATCH, KEEPALIVE_S, POLL_S, RETRY_MS
from framewire.store.analytics import (
    RowPosition,
    alerts_after,
    events_after,
    query_alerts,
    query_events,
)

if TYPE_CHECKING:
    from framewire.gateway.app import GatewayState

EventType = Literal["line_cross", "zone_enter", "zone_leave", "dwell", "window_count"]
AlertState = Literal["firing", "resolved"]
# one page of rows after a position: (row JSON, its position)
Fetch = Callable[[RowPosition, datetime], list[tuple[dict[str, Any], RowPosition]]]
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}},
                                             400: {}}
_ANALYTICS_DOC = ("the camera's analytics: lines [{name, points: [[x, y], [x, y]]}], zones "
                  "[{name, points: [[x, y], ...], dwell_s}], alerts [{when: zone_count, zone, "
                  "above, for_s, name}], labels [...]")
_EXAMPLE = {"lines": [{"name": "door", "points": [[640, 0], [640, 720]]}],
            "zones": [{"name": "bay", "points": [[0, 400], [600, 400], [600, 720], [0, 720]]}],
            "alerts": [{"when": "zone_count", "zone": "bay", "above": 5, "for_s": 10}]}
AnalyticsBody = Annotated[dict[str, Any], Body(description=_ANALYTICS_DOC, examples=[_EXAMPLE])]


def start_position(last_event_id: str | None) -> RowPosition:
    """Where a new stream starts: after ``Last-Event-ID``, else now (400 if it is bad)."""
    if not last_event_id:
        return RowPosition(datetime.now(UTC))
    try:
        return RowPosition.parse(last_event_id)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def row_events(state: GatewayState, request: Request, name: str, fetch: Fetch,
                     position: RowPosition) -> AsyncIterator[bytes]:
    """A stream of stored rows (``event: NAME``) after ``position``, each sent once stored for
    ``gateway.stream_settle_ms`` (as the results' stream), until the client leaves."""
    settle = timedelta(milliseconds=state.settings.gateway.stream_settle_ms)
    yield f"retry: {RETRY_MS}\n\n".encode()
    quiet_since = time.monotonic()
    while not state.stop.is_set and not await request.is_disconnected():
        batch = await run_in_threadpool(fetch, position, datetime.now(UTC) - settle)
        for row, at in batch:
            data = json.dumps(row, separators=(",", ":"))
            yield f"id: {at.event_id}\nevent: {name}\ndata: {data}\n\n".encode()
            position = at
        if batch:
            quiet_since = time.monotonic()
            if len(batch) == BATCH:
                continue
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"
        await anyio.sleep(POLL_S)


def _camera_id(camera_id: str) -> str:
    if not CAMERA_ID_PATTERN.match(camera_id):
        raise HTTPException(422, f"camera {camera_id!r}: use 1 to 128 letters, digits and "
                            ". _ : -")
    return camera_id


def register(api: APIRouter, state: GatewayState) -> None:
    """The analytics routes, on ``api``."""
    from framewire.gateway.app import _since

    settings = state.settings

    @api.get("/events", tags=["analytics"])
    def list_events(_: Viewer, camera: str | None = None,
                    type: Annotated[EventType | None, Query(  # noqa: A002 (the API's name)
                        description="only this event type")] = None,
                    since: Annotated[str | None, Query(
                        description="at or after: 10m, 2h, 1d or an ISO time")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        """Stored analytics events, newest first by frame time (`framewire events --json`):
        line_cross, zone_enter, zone_leave, dwell and window_count (with `window`)."""
        return query_events(state.db, camera, type, _since(since), limit)

    @api.get("/alerts", tags=["analytics"])
    def list_alerts(_: Viewer, camera: str | None = None,
                    state_: Annotated[AlertState | None, Query(
                        alias="state", description="firing or resolved")] = None,
                    since: Annotated[str | None, Query(
                        description="at or after: 10m, 2h, 1d or an ISO time")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        """Stored alert changes, newest first (`framewire alerts --json`): one row when an
        alert fires, one when it resolves, both with its `alert_id`."""
        return query_alerts(state.db, camera, state_, _since(since), limit)

    @api.get("/events/stream", tags=["analytics"], response_class=StreamingResponse,
             responses=_SSE_DOC)
    async def stream_events(request: Request, _: Viewer, camera: str | None = None,
                            type: Annotated[EventType | None, Query(  # noqa: A002
                                description="only this event type")] = None,
                            last_event_id: Annotated[str | None, Header()] = None
                            ) -> StreamingResponse:
        """New analytics events as Server-Sent Events (`event: analytics_event`); reconnect
        with `Last-Event-ID` to get every event stored after that one."""
        def fetch(after: RowPosition, until: datetime) -> list[tuple[dict[str, Any],
                                                                     RowPosition]]:
            return events_after(state.db, after, until, camera, type, BATCH)

        return StreamingResponse(
            row_events(state, request, "analytics_event", fetch, start_position(last_event_id)),
            media_type="text/event-stream", headers=_SSE_HEADERS)

    @api.get("/alerts/stream", tags=["analytics"], response_class=StreamingResponse,
             responses=_SSE_DOC)
    async def stream_alerts(request: Request, _: Viewer, camera: str | None = None,
                            last_event_id: Annotated[str | None, Header()] = None
                            ) -> StreamingResponse:
        """New alert changes as Server-Sent Events (`event: alert`); reconnect with
        `Last-Event-ID` to get every change stored after that one."""
        def fetch(after: RowPosition, until: datetime) -> list[tuple[dict[str, Any],
                                                                     RowPosition]]:
            return alerts_after(state.db, after, until, camera, BATCH)

        return StreamingResponse(
            row_events(state, request, "alert", fetch, start_position(last_event_id)),
            media_type="text/event-stream", headers=_SSE_HEADERS)

    @api.get("/cameras/{camera_id}/analytics", tags=["analytics"], responses={503: {}})
    def get_camera_analytics(camera_id: str, _: Viewer) -> dict[str, Any]:
        """A camera's lines, zones, alert rules and labels, and where they come from
        (`origin`: topic when set over this API, config, or none)."""
        from framewire.ops.analytics import camera_analytics

        found, origin = camera_analytics(settings, _camera_id(camera_id))
        return {"camera_id": camera_id, "origin": origin, **found.model_dump(mode="json")}

    @api.put("/cameras/{camera_id}/analytics", tags=["analytics"],
             responses={422: {}, 503: {}})
    def put_camera_analytics(camera_id: str, body: AnalyticsBody,
                             token: Operator) -> dict[str, Any]:
        """Replace a camera's analytics settings (all of them: a list left out is empty);
        the analytics service applies them from the camera's next frame, its tracks kept.
        422 (nothing written) for a rule that cannot work, saying what to fix."""
        from framewire.ops.analytics import set_camera_analytics, validated_analytics

        try:
            analytics = validated_analytics(body)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        set_camera_analytics(settings, _camera_id(camera_id), analytics)
        shown = analytics.model_dump(mode="json")
        audit(state.home, who(token), "camera.analytics", camera_id=camera_id, analytics=shown)
        return {"camera_id": camera_id, "origin": "topic", **shown}

    @api.delete("/cameras/{camera_id}/analytics", tags=["analytics"], status_code=204,
                responses={503: {}})
    def delete_camera_analytics(camera_id: str, token: Operator) -> Response:
        """Forget the analytics settings set over this API: the camera goes back to its
        configured ones (analytics.cameras), or to none."""
        from framewire.ops.analytics import set_camera_analytics

        set_camera_analytics(settings, _camera_id(camera_id), None)
        audit(state.home, who(token), "camera.analytics.reset", camera_id=camera_id)
        return Response(status_code=204)
