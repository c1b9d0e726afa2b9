"""Storage: results into the database, idempotent by frame id."""

from framewire.config import StorageSettings
from framewire.contracts import InferenceResult
from framewire.topology import StageSpec

STAGE = StageSpec(
    name="storage", entry="framewire.services.storage.stage:StorageStage",
    input="detections", input_contract=InferenceResult, settings=StorageSettings,
    # the retention of cameras added at run time (its sweeper)
    follows=("cameras",),
    summary="upserts results into the database by frame id (a redelivery makes no row)")
