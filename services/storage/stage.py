"""Storage: idempotent upsert of results by frame_id (a redelivered result never makes a row)."""

from __future__ import annotations

from framewire.config import Settings
from framewire.contracts import InferenceResult, utcnow
from framewire.ops.sweeper import Sweeper
from framewire.runtime import Stage
from framewire.runtime.loop import Outcome
from framewire.services.storage import STAGE
from framewire.store.db import open_database
from framewire.telemetry.metrics import service_metrics


class StorageStage(Stage):
    """detections (InferenceResult) → SQL rows."""

    spec = STAGE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.db = open_database(settings.resolved_database_url)
        self.end_to_end = service_metrics().end_to_end_seconds
        # what is past its retention is deleted while results are stored
        self.sweeper = Sweeper(settings).start()

    def process(self, records: list[InferenceResult]) -> list[Outcome]:
        self.db.upsert_results(records)
        stored_at = utcnow()
        for record in records:
            self.end_to_end.observe((stored_at - record.captured_at).total_seconds())
        return [None] * len(records)

    def close(self) -> None:
        self.sweeper.close()
        self.db.close()
