"""The gateway's HTTP API, ``/api/v1``: what the ``framewire`` commands show, over HTTP.

Every route needs a bearer token (``framewire token create``): viewer for the GETs, operator
to push frames and replay dead letters, admin to manage tokens. ``/openapi.json`` and
``/docs`` describe it. See docs/gateway.md.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError

from framewire import __version__
from framewire.config import Settings
from framewire.errors import ConfigError, DataError, TransientError
from framewire.gateway import dashboard
from framewire.gateway.audit import audit
from framewire.gateway.auth import Admin, Operator, Viewer, who
from framewire.gateway.frames import PUSH_TYPES, FramePusher, PushRefused
from framewire.gateway.results import API, blob_uri, result_by_id, result_json
from framewire.gateway.stream import result_events, start_position
from framewire.gateway.tokens import Role, TokenStore
from framewire.runtime import StopSignal
from framewire.store.blobs import BlobStore
from framewire.store.db import Database, open_database

_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    kind: {"schema": {"type": "string", "format": "binary"}} for kind in PUSH_TYPES}}}


@dataclass
class GatewayState:
    """What the routes share: settings, tokens, the databases, blobs and the frame pusher."""

    settings: Settings
    tokens: TokenStore
    db: Database
    spans: Database
    blobs: BlobStore
    pusher: FramePusher | None
    stop: StopSignal
    # one replay at a time: two at once would publish the same letters twice
    replaying: threading.Lock = field(default_factory=threading.Lock)

    @property
    def home(self):  # noqa: ANN201 (a Path)
        return self.settings.home.resolve()

    def close(self) -> None:
        self.db.close()
        if self.spans is not self.db:
            self.spans.close()


class ReplayRequest(BaseModel):
    """Which dead letters to re-publish (all when nothing is given)."""

    reason: str | None = Field(None, description="a reason code (e.g. corrupt_image) or a "
                               "word of the reason")
    since: str | None = Field(None, description="only newer: 10m, 2h, 1d or an ISO time")
    dry_run: bool = Field(False, description="count what matches, replay nothing")


class TokenRequest(BaseModel):
    role: Literal["viewer", "operator", "admin"]
    name: str = Field("", max_length=100, description="who or what holds it")


def open_state(settings: Settings, pusher: FramePusher | None,
               stop: StopSignal) -> GatewayState:
    db = open_database(settings.resolved_database_url)
    span_url = settings.resolved_span_database_url
    spans = db if span_url == settings.resolved_database_url else open_database(span_url)
    return GatewayState(settings, TokenStore(settings.home.resolve()), db, spans,
                        BlobStore.from_settings(settings), pusher, stop)


def create_app(state: GatewayState) -> FastAPI:
    """The FastAPI application over ``state``."""
    app = FastAPI(title="Framewire gateway", version=__version__,
                  description="Push frames, read results and their live stream, dead letters, "
                  "traces and status. Every route needs `Authorization: Bearer TOKEN` "
                  "(`framewire token create --role ROLE`).",
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.gateway = state
    api = APIRouter(prefix=API)
    _results_routes(api, state)
    _site_routes(api, state)
    _token_routes(api, state)
    from framewire.gateway import jobs, model  # the model switch and reprocess jobs

    model.register(api, state)
    jobs.register(api, state)
    from framewire.gateway import cameras, webhooks  # routes of their own modules

    cameras.register(api, state)
    webhooks.register(api, state)
    from framewire.gateway import analytics  # events, alerts, cameras' analytics

    analytics.register(api, state)
    app.include_router(api)
    dashboard.register(app, state)
    _error_handlers(app)
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PushRefused)
    async def _refused(_request: Request, exc: PushRefused) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        return JSONResponse({"detail": exc.reason, "code": exc.code}, exc.status,
                            headers=headers)

    @app.exception_handler(TransientError)
    async def _transient(_request: Request, exc: TransientError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "5"})

    @app.exception_handler(ConfigError)
    async def _misconfigured(_request: Request, exc: ConfigError) -> JSONResponse:
        # the site's own files or settings (a request's bad input is a 4xx where it is read):
        # a server error, but one that says what to fix
        return JSONResponse({"detail": str(exc)}, 500)

    @app.exception_handler(DBAPIError)
    async def _database(_request: Request, exc: DBAPIError) -> JSONResponse:
        return JSONResponse({"detail": f"the results database did not answer: "
                             f"{type(exc.orig).__name__}; retry, and see the gateway's log"},
                            503, headers={"Retry-After": "5"})


def _results_routes(api: APIRouter, state: GatewayState) -> None:
    @api.post("/cameras/{camera_id}/frames", status_code=202, openapi_extra=_IMAGE_BODY,
              tags=["frames"], responses={413: {}, 415: {}, 422: {}, 503: {}})
    async def push_frame(camera_id: str, request: Request, _: Operator) -> JSONResponse:
        """Publish one JPEG or PNG frame of a camera: 202 with its frame id once handed to
        the broker. Size and type are checked before the body is read; the frame then goes
        through ingest's checks (refused with 4xx and the reason, not dead-lettered)."""
        pusher = state.pusher
        if pusher is None:
            raise HTTPException(503, "this gateway takes no frames (started without ingest)")
        content_type = request.headers.get("content-type")
        length = request.headers.get("content-length")
        pusher.check_request(camera_id, content_type,
                             int(length) if length and length.isdigit() else None)
        limit, body = state.settings.max_upload_bytes, bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PushRefused(413, "too_large", f"the frame is over max_upload_bytes="
                                  f"{limit}; send a smaller frame")
        from starlette.concurrency import run_in_threadpool

        frame_id = await run_in_threadpool(pusher.push, camera_id, content_type or "",
                                           bytes(body))
        return JSONResponse({"frame_id": frame_id, "camera_id": camera_id}, 202)

    @api.get("/results", tags=["results"])
    def list_results(_: Viewer, camera: str | None = None,
                     since: Annotated[str | None, Query(
                         description="captured since: 10m, 2h, 1d or an ISO time")] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        """Stored results, newest first by capture time, with their detections."""
        rows = state.db.query_results(camera_id=camera, limit=limit, since=_since(since))
        return [result_json(r) for r in rows]

    @api.get("/results/stream", tags=["results"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def stream_results(request: Request, _: Viewer, camera: str | None = None,
                             last_event_id: Annotated[str | None, Header()] = None
                             ) -> StreamingResponse:
        """New results as Server-Sent Events (`event: result`); reconnect with
        `Last-Event-ID` to get every result stored after that event."""
        try:
            position = start_position(last_event_id)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return StreamingResponse(result_events(state, request, camera, position),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @api.get("/results/{frame_id}", tags=["results"], responses={404: {}})
    def get_result(frame_id: str, _: Viewer) -> dict[str, Any]:
        """One stored result, with links to its stored frame and thumbnail (or null)."""
        found = result_by_id(state.db, frame_id)
        if found is None:
            raise HTTPException(404, f"no stored result for frame {frame_id}")
        return result_json(*found)

    for column, path in (("frame_uri", "frame"), ("thumbnail_uri", "thumbnail")):
        _image_route(api, state, column, path)


def _image_route(api: APIRouter, state: GatewayState, column: str, path: str) -> None:
    what = "stored frame (faces blurred under privacy mode)" if path == "frame" else "thumbnail"

    def get_image(frame_id: str, _: Viewer) -> Response:
        found = result_by_id(state.db, frame_id)
        uri = blob_uri(*found, column) if found is not None else None
        if uri is None:
            raise HTTPException(404, f"frame {frame_id} has no {what}: unknown frame, or "
                                "its frame was not kept (inference.store_frames)")
        try:
            data = state.blobs.get(uri)
        except DataError as exc:
            raise HTTPException(404, f"the {what} of frame {frame_id} cannot be read: "
                                f"{exc.reason}") from None
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    get_image.__name__ = f"get_result_{path}"
    get_image.__doc__ = f"The {what} of a result, as JPEG."
    api.add_api_route(f"/results/{{frame_id}}/{path}", get_image, methods=["GET"],
                      tags=["results"], response_class=Response,
                      responses={200: {"content": {"image/jpeg": {}}}, 404: {}})


def _since(text: str | None) -> datetime | None:
    from framewire.ops.replay import parse_since

    try:
        return parse_since(text) if text else None
    except ConfigError as exc:
        raise HTTPException(422, str(exc).replace("--since", "since")) from None
    except (OverflowError, ValueError):  # a duration longer than datetime reaches
        raise HTTPException(422, f"since {text!r} lies before year 1: give a shorter "
                            "duration or a later time") from None


def _site_routes(api: APIRouter, state: GatewayState) -> None:
    settings = state.settings

    @api.get("/deadletters", tags=["dead letters"])
    def list_dead_letters(_: Viewer, limit: Annotated[int, Query(ge=1, le=10_000)] = 50
                          ) -> list[dict[str, Any]]:
        """The newest dead letters, oldest first: service, reason code and text, where the
        record came from, camera and frame."""
        from framewire.ops.status import dead_letter_report, dead_letters

        return [dead_letter_report(d) for _, d in dead_letters(settings, newest=limit)]

    @api.post("/deadletters/replay", tags=["dead letters"])
    def replay_dead_letters(request: ReplayRequest, token: Operator) -> dict[str, Any]:
        """Re-publish matching dead letters to their source topic (frame ids kept, so no
        duplicate results); those refused at ingest go through ingest again."""
        from framewire.ops.replay import replay, select
        from framewire.ops.status import dead_letters

        since = _since(request.since)
        with state.replaying:
            chosen = select(dead_letters(settings), request.reason, since)
            outcome = {} if request.dry_run or not chosen else dict(replay(settings, chosen))
        if not request.dry_run:
            audit(state.home, who(token), "deadletters.replay", reason=request.reason,
                  since=request.since, matched=len(chosen), outcome=outcome)
        return {"matched": len(chosen), "dry_run": request.dry_run, "outcome": outcome}

    @api.get("/traces/{frame_id}", tags=["traces"], responses={404: {}})
    def get_trace(frame_id: str, _: Viewer) -> dict[str, Any]:
        """One frame's spans across services, in start order (the embedded span store)."""
        from framewire.telemetry.spanstore import trace_of_frame

        spans = trace_of_frame(state.spans, frame_id)
        if not spans:
            raise HTTPException(404, f"no spans for frame {frame_id}: unknown id, not sampled "
                                "(FRAMEWIRE_TRACE_SAMPLE_RATIO), or spans exported to OTLP")
        return {"frame_id": frame_id, "trace_id": spans[0].trace_id,
                "spans": [{**asdict(s), "duration_ms": s.duration_ms} for s in spans]}

    @api.get("/status", tags=["status"])
    def get_status(_: Viewer) -> list[dict[str, Any]]:
        """What `framewire status --json` shows: each service, then the broker."""
        from fastapi.encoders import jsonable_encoder

        from framewire.ops.status import broker_status, site_status, status_report

        return jsonable_encoder(status_report(site_status(settings), broker_status(settings)))


def _token_routes(api: APIRouter, state: GatewayState) -> None:
    @api.get("/tokens", tags=["tokens"])
    def list_tokens(_: Admin) -> list[dict[str, str]]:
        """The site's tokens (ids, roles, names; never the tokens)."""
        return [t.public() for t in state.tokens.list()]

    @api.post("/tokens", status_code=201, tags=["tokens"])
    def create_token(request: TokenRequest, token: Admin) -> dict[str, str]:
        """A new token: returned once, in `token`; only its digest is kept."""
        secret, info = state.tokens.create(Role[request.role], request.name)
        audit(state.home, who(token), "token.create", token_id=info.token_id, role=info.role,
              name=info.name)
        return {"token": secret, **info.public()}

    @api.delete("/tokens/{token_id}", status_code=204, tags=["tokens"], responses={404: {}})
    def revoke_token(token_id: str, token: Admin) -> Response:
        """Revoke a token: it stops working at once."""
        gone = state.tokens.revoke(token_id)
        if gone is None:
            raise HTTPException(404, f"no token {token_id}; `GET {API}/tokens` lists them")
        audit(state.home, who(token), "token.revoke", token_id=token_id, role=gone.role,
              name=gone.name)
        return Response(status_code=204)
