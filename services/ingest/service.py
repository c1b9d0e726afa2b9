"""The ingest process: the configured cameras (and the demo ones) through ``Ingest``."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from framewire.capture.ingest import Ingest, SourceFactory
from framewire.capture.sources import CapturedImage
from framewire.config import CameraSettings, Settings
from framewire.runtime import StopSignal


def camera_sources(settings: Settings, demo: bool) -> dict[str, SourceFactory]:
    """Source factories for the configured cameras, plus the demo cameras when ``demo``."""
    from framewire.capture.demo import demo_source
    from framewire.capture.sources import open_source

    sources: dict[str, SourceFactory] = {}
    if demo:
        for i in range(settings.demo_cameras):
            camera_id = f"demo-{i + 1}"

            def make_demo(stop: threading.Event, cid: str = camera_id) -> Iterator[CapturedImage]:
                return demo_source(cid, settings.demo_fps, stop, settings.demo_width,
                                   settings.demo_height)

            sources[camera_id] = make_demo
    for cam in settings.cameras:

        def make(stop: threading.Event, c: CameraSettings = cam) -> Iterator[CapturedImage]:
            return open_source(c.url, fps=c.fps, loop=c.loop, stop=stop)

        sources[cam.camera_id] = make
    return sources


def main(settings: Settings, stop: StopSignal | None = None, demo: bool = False) -> None:
    """The ingest process: every configured camera (and the demo ones) until stopped."""
    Ingest(settings, stop).run(camera_sources(settings, demo), idle_when_done=True)
