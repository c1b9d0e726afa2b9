"""The one consume → decode → process → produce → commit loop, and the publisher under it."""

from framewire.retry import Backoff  # re-exported; new code imports framewire.retry
from framewire.runtime.loop import Stage, map_records, run_stage
from framewire.runtime.publisher import Publisher, StopSignal

__all__ = ["Backoff", "Publisher", "Stage", "StopSignal", "map_records", "run_stage"]
