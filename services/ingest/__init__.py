"""Ingest: cameras, files and streams in; validated frames out to ``frames.raw``."""

from framewire.config import IngestSettings
from framewire.contracts import FrameCaptured
from framewire.topology import Output, StageSpec

STAGE = StageSpec(
    name="ingest", entry="framewire.services.ingest.service:main", settings=IngestSettings,
    # raw frames long enough to replay a day after a model change
    outputs=(Output("frames.raw", FrameCaptured, retention="24h"),),
    # cameras added, changed and removed at run time (framewire cameras, the gateway)
    follows=("cameras",),
    summary="reads cameras, checks each frame, publishes it keyed by camera")
