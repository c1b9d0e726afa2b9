"""The ingest process: the demo cameras, and the site's cameras followed through ``Ingest``."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from framewire.capture.cameras import CameraWatch
from framewire.capture.ingest import Ingest, SourceFactory
from framewire.capture.sources import CapturedImage
from framewire.config import Settings
from framewire.runtime import StopSignal


def demo_sources(settings: Settings, demo: bool) -> dict[str, SourceFactory]:
    """The demo cameras (``demo-1``...), when ``demo``."""
    from framewire.capture.demo import demo_source

    sources: dict[str, SourceFactory] = {}
    if demo:
        for i in range(settings.demo_cameras):
            camera_id = f"demo-{i + 1}"

            def make_demo(stop: threading.Event, cid: str = camera_id) -> Iterator[CapturedImage]:
                return demo_source(cid, settings.demo_fps, stop, settings.demo_width,
                                   settings.demo_height)

            sources[camera_id] = make_demo
    return sources


def main(settings: Settings, stop: StopSignal | None = None, demo: bool = False) -> None:
    """The ingest process: the demo cameras and the site's cameras (the ``cameras`` setting
    with the ``cameras`` topic over it, followed while running) until stopped."""
    Ingest(settings, stop).run(demo_sources(settings, demo), idle_when_done=True,
                               watch=CameraWatch(settings))
