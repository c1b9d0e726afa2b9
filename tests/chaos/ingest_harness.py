"""An ingest process for the chaos tests: the real ``Ingest`` service, plus a journal.

Run as ``python -m tests.chaos.ingest_harness --journal FILE --fps N CAMERA=FOLDER ...`` with
the site's ``FRAMEWIRE_*`` environment. It publishes each folder as one camera through
``Ingest.run`` (one thread per camera, like ``framewire service ingest``) and appends to FILE:
``read`` when a source hands an image to ingest, ``sent`` when a frame goes to the producer,
``acked`` when the broker acknowledged it (the producer's delivery report). Each line is one
``write()`` to an O_APPEND file, so ``kill -9`` cannot take back a line already written.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from pathlib import Path

from framewire.capture.ingest import Ingest, SourceFactory
from framewire.capture.sources import CapturedImage, open_source
from framewire.config import load_settings
from framewire.runtime import Publisher
from framewire.telemetry.logs import setup_logging
from tests.chaos.ledger import FileJournal, journal_frames


def journaled_source(camera: str, folder: str, fps: float | None, journal: FileJournal
                     ) -> SourceFactory:
    def factory(stop: threading.Event) -> Iterator[CapturedImage]:
        for image in open_source(folder, fps=fps, stop=stop):
            journal("read", "", f"{camera}:{image.source}")
            yield image

    return factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--fps", type=float, required=True, help="per camera; 0: as read")
    parser.add_argument("cameras", nargs="+", help="CAMERA=FOLDER")
    args = parser.parse_args()
    settings = load_settings()
    setup_logging("ingest", settings.log_level)
    journal = FileJournal(args.journal)
    publisher = Publisher(settings, "ingest")
    journal_frames(publisher, journal)
    sources = {}
    for spec in args.cameras:
        camera, _, folder = spec.partition("=")
        sources[camera] = journaled_source(camera, folder, args.fps or None, journal)
    Ingest(settings, publisher=publisher).run(sources)


if __name__ == "__main__":
    main()
