"""The one consume → decode → process → produce → commit loop, and the units it uses.

``loop`` (StageRunner) drives ``stage`` (a stage's logic), ``batch`` (one batch's work),
``inflight`` (acknowledgements and commits), ``transactions`` (exactly_once); ``publisher`` is
a service's output side: ``producer``, ``deadletters``, ``heartbeat``; ``stop`` the stop signal.
"""

from framewire.retry import Backoff  # re-exported; new code imports framewire.retry
from framewire.runtime.loop import Stage, map_records, run_stage
from framewire.runtime.publisher import Publisher
from framewire.runtime.stop import StopSignal

__all__ = ["Backoff", "Publisher", "Stage", "StopSignal", "map_records", "run_stage"]
