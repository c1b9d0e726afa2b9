"""``framewire publish``: send a file, folder, video or stream into the pipeline."""

from __future__ import annotations

import threading
import time
from typing import Annotated

import typer

from framewire.cli import app, console, settings_for


@app.command()
def publish(
    camera: Annotated[str, typer.Option(help="Camera id (the Kafka key).")],
    path: Annotated[str, typer.Option(help="Image, folder, video file, rtsp:// or http:// URL.")],
    fps: Annotated[
        float | None, typer.Option(help="Frames per second (default: as fast as read).")
    ] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Repeat a file or folder forever.")] = False,
) -> None:
    """Publish frames from PATH as camera CAMERA; streams run until Ctrl-C.

    Example: framewire publish --camera cam-7 --path ./shots --fps 5
    """
    from framewire.broker.client import client_config, wait_for_broker
    from framewire.capture.ingest import Ingest
    from framewire.capture.sources import open_source

    settings = settings_for("ingest")
    wait_for_broker(client_config(settings), 15.0)
    ingest = Ingest(settings)
    ingest.start_lag_watch()
    frames = open_source(path, fps=fps, loop=loop, stop=ingest.stop.event)
    counters = ingest.publisher.counters
    done = threading.Event()

    def progress() -> None:
        while not done.wait(1.0):
            console.print(f"published {counters.records_out}, rejected {counters.dead_lettered}")

    reporter = threading.Thread(target=progress, daemon=True)
    reporter.start()
    started = time.monotonic()
    try:
        ingest.pump(camera, frames)
    finally:
        done.set()
        ingest.close()
    elapsed = time.monotonic() - started
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(counters.drop_reasons.items()))
    console.print(f"done: published {counters.records_out} frames, rejected "
                  f"{counters.dead_lettered} (see `framewire deadletters`)"
                  + (f", dropped {counters.dropped} ({dropped})" if counters.dropped else "")
                  + f" in {elapsed:.1f} s")
