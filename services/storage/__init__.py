"""Storage: results into the database, idempotent by frame id; the analytics' events and
alerts too, each topic read by a stage of its own (``event_storage``, ``alert_storage``): one
input per stage keeps the runtime's loop as it is, and each keeps every guarantee of a stage
(idempotent upsert, dead letters, faults, its consumer group's lag in ``framewire status``)."""

from framewire.analytics.records import Alert, AnalyticsEvent
from framewire.config import StorageSettings
from framewire.contracts import InferenceResult
from framewire.topology import StageSpec

STAGE = StageSpec(
    name="storage", entry="framewire.services.storage.stage:StorageStage",
    input="detections", input_contract=InferenceResult, settings=StorageSettings,
    # the retention of cameras added at run time (its sweeper)
    follows=("cameras",),
    summary="upserts results into the database by frame id (a redelivery makes no row)")

EVENT_STAGE = StageSpec(
    name="event_storage", entry="framewire.services.storage.analytics:EventStorageStage",
    input="events", input_contract=AnalyticsEvent,
    summary="stores the analytics' events and window counts by event id (a redelivery makes "
    "no row)")

ALERT_STAGE = StageSpec(
    name="alert_storage", entry="framewire.services.storage.analytics:AlertStorageStage",
    input="alerts", input_contract=Alert,
    summary="stores each alert's changes (firing, resolved) by alert id and state")
