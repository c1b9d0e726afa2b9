"""The one consume → decode → process → produce → commit loop, and the publisher under it."""

from framewire.runtime.loop import Backoff, Stage, map_records, run_stage
from framewire.runtime.publisher import Publisher, StopSignal

__all__ = ["Backoff", "Publisher", "Stage", "StopSignal", "map_records", "run_stage"]
