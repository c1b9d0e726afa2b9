"""``Client``: the gateway's HTTP API (``/api/v1``) from Python, with typed answers.

    from framewire.client import Client

    with Client("http://127.0.0.1:8080", token) as fw:
        frame_id = fw.publish("door-1", "shot.jpg")
        for result in fw.stream(camera="door-1"):
            print(result.frame_id, [d.label for d in result.detections])

Every refusal raises a ``FramewireAPIError`` (``Unauthorized``, ``Forbidden``, ``NotFound``,
``Unavailable``); see docs/sdk.md.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx2

from framewire import __version__
from framewire.client.errors import Unreachable, api_error
from framewire.client.models import (
    Camera,
    DeadLetterReport,
    ReplayOutcome,
    Result,
    Trace,
)
from framewire.client.stream import ResultStream

API = "/api/v1"
JPEG, PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def image_type(data: bytes) -> str:
    """``image/jpeg`` or ``image/png``, from the image's first bytes; ValueError otherwise."""
    if data.startswith(JPEG):
        return "image/jpeg"
    if data.startswith(PNG):
        return "image/png"
    raise ValueError("the gateway takes JPEG or PNG frames and this is neither (its first "
                     f"bytes: {data[:8].hex(' ')}); convert it, or publish other formats "
                     "with `framewire publish`")


class Client:
    """A connection to one gateway, with one token (``framewire token create``).

    ``url`` is the gateway's address (``http://127.0.0.1:8080``; the ``/api/v1`` that
    ``framewire run`` prints may be left on). ``timeout`` bounds each request, in seconds.
    Use it as a context manager, or ``close()`` it.
    """

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        base = url.rstrip("/")
        base = base.removesuffix(API)
        self.url = base
        self._http = httpx2.Client(
            base_url=base, timeout=timeout,
            headers={"Authorization": f"Bearer {token}",
                     "User-Agent": f"framewire-client/{__version__}"})
        self.cameras = Cameras(self)

    # -- results ---------------------------------------------------------------------------

    def results(self, camera: str | None = None, since: str | datetime | timedelta | None = None,
                limit: int = 50) -> list[Result]:
        """Stored results, newest first by capture time: of one camera, captured since
        ``since`` (``10m``, ``2h``, ``1d``, an ISO time, a datetime or a timedelta), at most
        ``limit`` (1-1000)."""
        params: dict[str, Any] = {"limit": limit}
        if camera is not None:
            params["camera"] = camera
        if since is not None:
            params["since"] = _since(since)
        return [Result.from_json(r) for r in self._json("GET", "/results", params=params)]

    def result(self, frame_id: str) -> Result:
        """One stored result; NotFound when the frame has none (yet)."""
        return Result.from_json(self._json("GET", f"/results/{_segment(frame_id)}"))

    def frame(self, frame_id: str) -> bytes:
        """The stored frame of a result, as JPEG (faces blurred under privacy mode); NotFound
        when it has none (``inference.store_frames``) or it is gone (retention)."""
        return self._request("GET", f"/results/{_segment(frame_id)}/frame").content

    def thumbnail(self, frame_id: str) -> bytes:
        """The thumbnail of a result's stored frame, as JPEG; NotFound when there is none."""
        return self._request("GET", f"/results/{_segment(frame_id)}/thumbnail").content

    def stream(self, camera: str | None = None, last_event_id: str | None = None,
               reconnect_delay: float | None = None) -> ResultStream:
        """New results as they are stored, for ever (``close()`` ends it): of one camera,
        from now on, or after ``last_event_id`` (a ``ResultStream.last_event_id`` kept from
        before). It reconnects by itself; see ``ResultStream``."""
        return ResultStream(self._http, camera, last_event_id, reconnect_delay)

    # -- frames in -------------------------------------------------------------------------

    def publish(self, camera: str, image: bytes | str | os.PathLike[str]) -> str:
        """Push one JPEG or PNG frame of ``camera`` (bytes, or the path of a file); returns
        its frame id once the gateway handed it to the broker. Needs the operator role."""
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        answer = self._json("POST", f"/cameras/{_segment(camera)}/frames", content=data,
                            headers={"Content-Type": image_type(data)})
        return str(answer["frame_id"])

    # -- the site --------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """What ``framewire status --json`` shows: one entry per service, then the broker
        (docs/operations.md lists the keys)."""
        return list(self._json("GET", "/status"))

    def dead_letters(self, limit: int = 50) -> list[DeadLetterReport]:
        """The newest dead letters, oldest first."""
        return [DeadLetterReport.from_json(d)
                for d in self._json("GET", "/deadletters", params={"limit": limit})]

    def replay_dead_letters(self, reason: str | None = None,
                            since: str | datetime | timedelta | None = None,
                            dry_run: bool = False) -> ReplayOutcome:
        """Publish the matching dead letters again to where they came from (all when no
        filter is given); ``dry_run`` only counts them. Needs the operator role."""
        body = {"reason": reason, "since": _since(since) if since is not None else None,
                "dry_run": dry_run}
        return ReplayOutcome.from_json(self._json("POST", "/deadletters/replay", json=body))

    def trace(self, frame_id: str) -> Trace:
        """One frame's spans across the services; NotFound when there are none."""
        return Trace.from_json(self._json("GET", f"/traces/{_segment(frame_id)}"))

    # -- plumbing --------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """The gateway's answer to a request under /api/v1; the matching FramewireAPIError
        when it refuses or does not answer."""
        try:
            response = self._http.request(method, API + path, **kwargs)
        except httpx2.TransportError as exc:
            raise Unreachable(None, f"no answer from the gateway at {self.url}: "
                              f"{type(exc).__name__}: {exc}; is it running "
                              "(`framewire status`)?") from exc
        if response.is_success:
            return response
        try:
            body: Any = response.json()
        except ValueError:
            body = {"detail": response.text.strip()}
        raise api_error(response.status_code, body, response.headers.get("retry-after"))


class Cameras:
    """The site's cameras at run time (``/api/v1/cameras``): ingest starts, restarts or
    stops a camera within about a second of a change. Changes need the operator role."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> list[Camera]:
        """The cameras the site runs, by id."""
        return [Camera.from_json(c) for c in self._client._json("GET", "/cameras")]

    def add(self, camera_id: str, url: str, fps: float | None = None, loop: bool = False,
            retention: str | None = None, privacy_mode: bool | None = None) -> Camera:
        """Add a camera (``url``: a file, folder, video, ``rtsp://`` or ``http(s)://``
        camera, opened by ingest on its host); returns it as stored."""
        body = _camera_body(camera_id, url, fps, loop, retention, privacy_mode)
        return Camera.from_json(self._client._json("POST", "/cameras", json=body))

    def update(self, camera_id: str, url: str, fps: float | None = None, loop: bool = False,
               retention: str | None = None, privacy_mode: bool | None = None) -> Camera:
        """Replace all the settings of a camera (a field left out takes its default): ingest
        restarts it with them. NotFound when the site runs no such camera."""
        body = _camera_body(camera_id, url, fps, loop, retention, privacy_mode)
        path = f"/cameras/{_segment(camera_id)}"
        return Camera.from_json(self._client._json("PUT", path, json=body))

    def remove(self, camera_id: str) -> None:
        """Stop and remove a camera; NotFound when the site runs none of that id."""
        self._client._request("DELETE", f"/cameras/{_segment(camera_id)}")


def _camera_body(camera_id: str, url: str, fps: float | None, loop: bool,
                 retention: str | None, privacy_mode: bool | None) -> dict[str, Any]:
    body: dict[str, Any] = {"camera_id": camera_id, "url": url, "loop": loop}
    for name, value in (("fps", fps), ("retention", retention),
                        ("privacy_mode", privacy_mode)):
        if value is not None:
            body[name] = value
    return body


def _segment(value: str) -> str:
    """``value`` as one path segment (a ``/`` in an id cannot reach another route)."""
    return quote(value, safe="")


def _since(since: str | datetime | timedelta) -> str:
    """``since`` as the gateway takes it: a duration (``90s``) or an ISO time."""
    if isinstance(since, timedelta):
        return f"{since.total_seconds():.6f}".rstrip("0").rstrip(".") + "s"
    if isinstance(since, datetime):
        return since.isoformat()
    return since
