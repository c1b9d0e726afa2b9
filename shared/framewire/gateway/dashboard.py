"""The dashboard: web pages at ``/`` over what the API serves, for people.

Pages are rendered here (Jinja2, autoescaped) from the same functions the API uses
(``framewire.ops.status``, ``framewire.ops.cameras``, the results database, the span store);
a little JavaScript (``static/dashboard.js``, no framework) draws boxes over frames, follows
the live stream and calls the API for replays, model switches and reprocess jobs. Signing in
puts a token in an HttpOnly, SameSite=Strict cookie, which the API accepts too (see
``framewire.gateway.auth``): viewers see every page, operators and admins also get the
controls that change something. Forms that change something are checked for the gateway's
own ``Origin``, as the API checks cookie requests. See docs/dashboard.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from framewire.errors import ConfigError, FramewireError, TransientError
from framewire.gateway.audit import audit
from framewire.gateway.auth import COOKIE, same_origin, who
from framewire.gateway.results import API, result_json
from framewire.gateway.tokens import Role, TokenInfo

if TYPE_CHECKING:  # app.py registers these pages: importing it here would be circular
    from framewire.gateway.app import GatewayState

log = logging.getLogger(__name__)
HERE = files("framewire.gateway")
COOKIE_MAX_AGE_S = 12 * 3600
_templates = Jinja2Templates(directory=str(HERE / "templates"))


class SignInNeeded(Exception):
    """A page was asked for without a valid token cookie: go to /login."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def register(app: FastAPI, state: GatewayState) -> None:
    """Add the dashboard's pages and static files to the gateway's app."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(SignInNeeded)
    async def _sign_in(_request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.path)}", 303)

    _login_pages(app, state)
    _site_pages(app, state)
    _camera_pages(app, state)
    _result_pages(app, state)


def signed_in(request: Request, state: GatewayState) -> TokenInfo:
    """The token of the page's cookie; SignInNeeded when there is none or it is revoked."""
    info = state.tokens.verify(request.cookies.get(COOKIE, ""))
    if info is None:
        raise SignInNeeded(request.url.path)
    return info


def may_change(token: TokenInfo) -> bool:
    """Whether the page shows the controls that change something (operator and up)."""
    return Role[token.role] >= Role.operator


def page(request: Request, template: str, token: TokenInfo | None, status: int = 200,
         **context: Any) -> HTMLResponse:
    """A page: ``template`` with the signed-in token, its role's controls and ``context``;
    ``?fragment=1`` answers the page's main part alone (what the page's script refreshes)."""
    fragment = request.query_params.get("fragment") == "1"
    return _templates.TemplateResponse(
        request, template, {"token": token, "can_change": token is not None and may_change(
            token), "fragment": fragment, "api": API, **context}, status_code=status,
        headers={"Cache-Control": "no-store"})


async def form_of(request: Request) -> dict[str, str]:
    """A submitted form's fields (``application/x-www-form-urlencoded``), each its last value;
    403 when it comes from another origin (a page elsewhere posting to the gateway)."""
    if not same_origin(request):
        raise HTTPException(403, "a form from another origin: use the dashboard's own pages")
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _login_pages(app: FastAPI, state: GatewayState) -> None:
    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return page(request, "login.html", None, next=local_path(next), error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await form_of(request)
        info = state.tokens.verify(form.get("token", "").strip())
        target = local_path(form.get("next", "/"))
        if info is None:
            return page(request, "login.html", None, 401, next=target,
                        error="unknown or revoked token: make one with `framewire token "
                        "create --role viewer|operator|admin`")
        answer = RedirectResponse(target, 303)
        answer.set_cookie(COOKIE, form["token"].strip(), max_age=COOKIE_MAX_AGE_S, path="/",
                          httponly=True, samesite="strict",
                          secure=request.url.scheme == "https")
        return answer

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await form_of(request)
        answer = RedirectResponse("/login", 303)
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return answer


def local_path(target: str) -> str:
    """``target`` when it is a path of this site, else ``/`` (no redirect to elsewhere)."""
    # browsers read "/\\host" as "//host": another site
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _site_pages(app: FastAPI, state: GatewayState) -> None:
    settings = state.settings

    @app.get("/", include_in_schema=False)
    def overview(request: Request) -> HTMLResponse:
        token = signed_in(request, state)
        return page(request, "overview.html", token, **site_overview(state))

    @app.get("/deadletters", include_in_schema=False)
    def dead_letter_page(request: Request, limit: int = 100) -> HTMLResponse:
        from framewire.broker.reading import topic_size
        from framewire.ops.status import dead_letter_report, dead_letters

        token = signed_in(request, state)
        shown = max(1, min(limit, 1000))
        letters = [dead_letter_report(d) for _, d in dead_letters(settings, newest=shown)]
        total = max(len(letters), topic_size(settings, settings.topic("deadletter")))
        return page(request, "deadletters.html", token, total=total,
                    letters=list(reversed(letters)))

    @app.get("/model", include_in_schema=False)
    def model_page(request: Request) -> HTMLResponse:
        from framewire.models.manifest import builtin_models

        token = signed_in(request, state)
        return page(request, "model.html", token, builtin=builtin_models(),
                    configured=settings.inference.model)

    @app.get("/jobs", include_in_schema=False)
    def jobs_page(request: Request) -> HTMLResponse:
        token = signed_in(request, state)
        cameras = sorted({c.camera_id for c in state.db.cameras()})
        return page(request, "jobs.html", token, cameras=cameras)


def site_overview(state: GatewayState) -> dict[str, Any]:
    """What the overview shows: each service (replicas, frames/s, lag, counters, energy,
    problems), the broker, the dead letters' count, and the model and provider of the
    newest result."""
    from framewire.broker.reading import topic_size
    from framewire.ops.status import broker_status, site_status, status_report

    settings = state.settings
    try:
        report = status_report(site_status(settings), broker_status(settings))
        # counted from the topic's offsets: a page refreshed every few seconds must not read
        # (and decode) every dead letter kept
        letters: int | None = topic_size(settings, settings.topic("deadletter"))
        error = None
    except TransientError as exc:  # a broker restarting: say so, the page stays up
        report, letters, error = [], None, str(exc)
    services = [dict(entry, replicas=sum(1 for i in entry["instances"]
                                         if i.get("state", "running") != "stopped"
                                         and (i.get("seconds_since_heartbeat") or 0) <= 30),
                     frames_per_s=round(sum(i.get("out_per_s") or 0.0
                                            for i in entry["instances"]), 1))
                for entry in report]
    newest = state.db.query_results(limit=1)
    return {"services": services, "dead_letters": letters, "error": error,
            "newest": result_json(newest[0]) if newest else None,
            "problems": [(s["service"], p) for s in services for p in s["problems"]]}


def _camera_pages(app: FastAPI, state: GatewayState) -> None:
    settings = state.settings

    @app.get("/cameras", include_in_schema=False)
    def cameras_page(request: Request) -> HTMLResponse:
        token = signed_in(request, state)
        return page(request, "cameras.html", token, **_cameras(state),
                    edit=request.query_params.get("edit"))

    @app.post("/cameras", include_in_schema=False)
    async def add_camera(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from framewire.ops.cameras import add_camera

        token = _operator(request, state)
        form = await form_of(request)
        camera = {"camera_id": form.get("camera_id", "").strip(),
                  "url": form.get("url", "").strip(), "loop": form.get("loop") == "on",
                  "fps": form.get("fps") or None, "retention": form.get("retention") or None}
        if form.get("privacy_mode") in ("on", "off"):
            camera["privacy_mode"] = form["privacy_mode"] == "on"
        try:
            written = await run_in_threadpool(add_camera, settings, camera)
        except (ConfigError, TransientError) as exc:
            return page(request, "cameras.html", token, 422 if isinstance(
                exc, ConfigError) else 503, **_cameras(state), edit=None,
                form_error=str(exc), form=form)
        shown = written.camera.as_json()  # the URL masked, as the API's audit has it
        audit(state.home, who(token), "camera.add" if written.created else "camera.change",
              camera_id=shown.pop("camera_id"), camera=shown, via="dashboard")
        return RedirectResponse("/cameras", 303)

    @app.post("/cameras/{camera_id}/remove", include_in_schema=False)
    async def remove_camera(camera_id: str, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from framewire.ops.cameras import UnknownCamera, remove_camera

        token = _operator(request, state)
        await form_of(request)
        try:
            await run_in_threadpool(remove_camera, settings, camera_id)
        except (UnknownCamera, TransientError) as exc:
            return page(request, "cameras.html", token, 404 if isinstance(
                exc, UnknownCamera) else 503, **_cameras(state), edit=None,
                form_error=str(exc))
        audit(state.home, who(token), "camera.remove", camera_id=camera_id, via="dashboard")
        return RedirectResponse("/cameras", 303)


def _operator(request: Request, state: GatewayState) -> TokenInfo:
    token = signed_in(request, state)
    if not may_change(token):
        raise HTTPException(403, f"this needs the operator role; token {token.token_id} is "
                            f"{token.role}")
    return token


def _cameras(state: GatewayState) -> dict[str, Any]:
    """The site's cameras (as ``framewire cameras ls --json``), then those only ingest
    (the demo cameras) or the results (frames pushed to the gateway) know, and which ones
    ingest reports stalled; or the error that kept them from being read."""
    from framewire.contracts.codec import make_codec
    from framewire.ops.cameras import list_cameras
    from framewire.ops.status import heartbeats

    settings = state.settings
    try:
        cameras = [c.as_json() for c in list_cameras(settings)]
        beats = [b for b in heartbeats(settings, make_codec(
            settings.schema_registry_url, settings.schema_registry_auth))
            if b.service == "ingest" and b.state != "stopped"]
    except FramewireError as exc:
        return {"cameras": [], "stalled": [], "error": str(exc)}
    known = {c["camera_id"] for c in cameras}
    for origin, ids in (("ingest", {c for b in beats for c in b.partitions}),
                        ("results", {c.camera_id for c in state.db.cameras()})):
        for camera_id in sorted(ids - known):
            cameras.append({"camera_id": camera_id, "url": "", "fps": None, "loop": False,
                            "retention": None, "privacy_mode": None, "origin": origin})
            known.add(camera_id)
    stalled = sorted({c for b in beats for c in b.stalled_cameras})
    return {"cameras": cameras, "stalled": stalled, "error": None}


def _result_pages(app: FastAPI, state: GatewayState) -> None:
    @app.get("/detections", include_in_schema=False)
    def detections_page(request: Request, camera: str = "", since: str = "1h",
                        until: str = "", limit: int = 48) -> HTMLResponse:
        from framewire.ops.replay import parse_since

        token = signed_in(request, state)
        error, results = None, []
        try:
            results = state.db.query_results(camera_id=camera or None,
                                             limit=max(1, min(limit, 500)),
                                             since=parse_since(since) if since else None,
                                             until=parse_since(until) if until else None)
        except (ConfigError, OverflowError, ValueError) as exc:
            error = str(exc).replace("--since ", "")
        cameras = sorted({c.camera_id for c in state.db.cameras()})
        return page(request, "detections.html", token, 422 if error else 200,
                    results=[result_json(r) for r in results], cameras=cameras,
                    camera=camera, since=since, until=until, limit=limit,
                    error=error)

    @app.get("/traces", include_in_schema=False)
    def find_trace(request: Request, frame_id: str = "") -> Response:
        signed_in(request, state)
        return RedirectResponse(f"/traces/{quote(frame_id.strip())}" if frame_id.strip()
                                else "/detections", 303)

    @app.get("/traces/{frame_id}", include_in_schema=False)
    def trace_page(request: Request, frame_id: str) -> HTMLResponse:
        from framewire.gateway.results import result_by_id
        from framewire.telemetry.spanstore import trace_of_frame

        token = signed_in(request, state)
        spans = trace_of_frame(state.spans, frame_id)
        found = result_by_id(state.db, frame_id)
        return page(request, "trace.html", token, 200 if spans or found else 404,
                    frame_id=frame_id, bars=waterfall([asdict(s) for s in spans]),
                    result=result_json(*found) if found else None)


def waterfall(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans as the bars of a waterfall: each one's offset and width in percent of the whole
    trace, its depth under its parents, and its duration in ms."""
    if not spans:
        return []
    start = min(s["start_ns"] for s in spans)
    total = max(max(s["end_ns"] for s in spans) - start, 1)
    by_id = {s["span_id"]: s for s in spans}

    def depth(span: dict[str, Any]) -> int:
        seen, level = set(), 0
        while span.get("parent_id") in by_id and span["span_id"] not in seen:
            seen.add(span["span_id"])
            span, level = by_id[span["parent_id"]], level + 1
        return level

    return [{**s, "depth": depth(s), "duration_ms": round((s["end_ns"] - s["start_ns"]) / 1e6, 2),
             "offset_pct": round(100 * (s["start_ns"] - start) / total, 2),
             "width_pct": max(round(100 * (s["end_ns"] - s["start_ns"]) / total, 2), 0.3),
             "attributes_json": json.dumps(s.get("attributes") or {}, default=str)}
            for s in spans]
