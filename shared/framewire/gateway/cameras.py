"""``/api/v1/cameras``: list, add, change and remove the site's cameras at run time.

The routes call ``framewire.ops.cameras``, as ``framewire cameras`` does: each change is one
record on the compacted ``cameras`` topic, which ingest follows (the camera starts, restarts
or stops within a second or so). A change is answered once the broker acknowledged it and
the gateway's own follower of the topic shows it, so a frame pushed right after takes the
camera's settings (its privacy mode). Changes are written to the audit log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import JSONResponse, Response

from framewire.config import CameraSettings
from framewire.errors import ConfigError
from framewire.gateway.audit import audit
from framewire.gateway.auth import Operator, Viewer, who
from framewire.ops.cameras import (
    SiteCamera,
    UnknownCamera,
    add_camera,
    list_cameras,
    remove_camera,
    validated_camera,
)

if TYPE_CHECKING:
    from framewire.gateway.app import GatewayState

log = logging.getLogger(__name__)
# how long an answer waits for the gateway's follower of the cameras topic to show a change
SHOWN_WAIT_S = 5.0

_BODY_DOC = ("the camera's settings: camera_id, url (a path, rtsp(s):// or http(s)://), fps, "
             "loop, retention (e.g. 7d), privacy_mode (null: the site's)")
_EXAMPLE = {"camera_id": "door-1", "url": "rtsp://10.0.0.7/stream", "fps": 5, "loop": False,
            "retention": "7d", "privacy_mode": True}
CameraBody = Annotated[dict[str, Any], Body(description=_BODY_DOC, examples=[_EXAMPLE])]


def _valid(body: dict[str, Any]) -> CameraSettings:
    try:
        return validated_camera(body)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None


def _shown(state: GatewayState, camera_id: str, camera: CameraSettings | None) -> None:
    """Wait until the gateway's follower of the topic shows the change (pushed frames)."""
    pusher = state.pusher
    if pusher is not None and not pusher.wait_for_camera(camera_id, camera, SHOWN_WAIT_S):
        log.warning("camera change acknowledged but not yet read back by the gateway; frames "
                    "pushed meanwhile take the settings it had", extra={"camera_id": camera_id})


def _audit_camera(state: GatewayState, token: Any, action: str, camera: SiteCamera) -> None:
    shown = camera.as_json()  # the URL masked: no credential reaches the log
    audit(state.home, who(token), action, camera_id=shown.pop("camera_id"), camera=shown)


def register(api: APIRouter, state: GatewayState) -> None:
    """The cameras routes, on ``api``."""
    settings = state.settings

    @api.get("/cameras", tags=["cameras"])
    def get_cameras(_: Viewer) -> list[dict[str, Any]]:
        """The cameras the site runs, as `framewire cameras ls --json` shows them (URLs
        masked; `origin`: config or topic)."""
        return [c.as_json() for c in list_cameras(settings)]

    @api.post("/cameras", tags=["cameras"], status_code=201,
              responses={200: {"description": "an existing camera changed"}, 422: {}, 503: {}})
    def post_camera(body: CameraBody, token: Operator) -> JSONResponse:
        """Add a camera (201), or replace the settings of the one with its id (200)."""
        camera = _valid(body)
        written = add_camera(settings, camera)
        _shown(state, camera.camera_id, camera)
        _audit_camera(state, token, "camera.add" if written.created else "camera.change",
                      written.camera)
        return JSONResponse(written.camera.as_json(), 201 if written.created else 200)

    @api.put("/cameras/{camera_id}", tags=["cameras"], responses={404: {}, 422: {}, 503: {}})
    def put_camera(camera_id: str, body: CameraBody, token: Operator) -> dict[str, Any]:
        """Replace a camera's settings (all of them: a field left out takes its default;
        `camera_id` may be left out). 404 when the site runs no such camera."""
        if body.get("camera_id", camera_id) != camera_id:
            raise HTTPException(422, f"the body names camera {body['camera_id']!r} but the "
                                f"path {camera_id!r}; to rename, add the new id and remove the "
                                "old one")
        camera = _valid({**body, "camera_id": camera_id})
        if camera_id not in {c.settings.camera_id for c in list_cameras(settings)}:
            raise HTTPException(404, f"no camera {camera_id!r} on this site; add it with "
                                "POST /api/v1/cameras")
        written = add_camera(settings, camera)
        _shown(state, camera_id, camera)
        _audit_camera(state, token, "camera.change", written.camera)
        return written.camera.as_json()

    @api.delete("/cameras/{camera_id}", tags=["cameras"], status_code=204,
                responses={404: {}, 503: {}})
    def delete_camera(camera_id: str, token: Operator) -> Response:
        """Remove a camera: ingest stops reading it (a configured one stays removed until
        added again)."""
        try:
            gone = remove_camera(settings, camera_id)
        except UnknownCamera as exc:
            raise HTTPException(404, str(exc)) from None
        _shown(state, camera_id, None)
        _audit_camera(state, token, "camera.remove", gone)
        return Response(status_code=204)
