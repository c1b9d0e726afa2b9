"""Framewire services: each a stage of pure logic plus this thin entry point."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framewire.config import CameraSettings, Settings
    from framewire.runtime import StopSignal
    from framewire.services.ingest.service import SourceFactory
    from framewire.services.ingest.sources import CapturedImage

SERVICES = ("ingest", "preprocess", "inference", "storage")


def camera_sources(settings: Settings, demo: bool) -> dict[str, SourceFactory]:
    """Source factories for the configured cameras, plus the demo cameras when ``demo``."""
    from framewire.services.ingest.demo import demo_source
    from framewire.services.ingest.sources import open_source

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


def run_service(name: str, settings: Settings, stop: StopSignal | None = None,
                demo: bool = False) -> None:
    """Run one service in this process until SIGTERM/SIGINT."""
    import faulthandler
    import signal

    from framewire.procutil import keep_freed_memory
    from framewire.runtime import run_stage

    keep_freed_memory()
    # `kill -USR1 PID` writes every thread's stack to the service's log: what a hung one waits on
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    if name == "ingest":
        from framewire.services.ingest.service import Ingest

        Ingest(settings, stop).run(camera_sources(settings, demo))
        return
    if name == "preprocess":
        from framewire.services.preprocess.stage import PreprocessStage as StageClass
    elif name == "inference":
        from framewire.services.inference.stage import InferenceStage as StageClass  # type: ignore[assignment]
    elif name == "storage":
        from framewire.services.storage.stage import StorageStage as StageClass  # type: ignore[assignment]
    else:
        raise KeyError(f"unknown service {name!r}; services are {', '.join(SERVICES)}")
    run_stage(StageClass(settings), settings, stop)
