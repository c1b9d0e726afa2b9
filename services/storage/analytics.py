"""Storage of the analytics' records: events by ``event_id``, alert changes by
``(alert_id, state)``; a redelivered record never makes a second row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from framewire.config import Settings
from framewire.runtime import Stage
from framewire.runtime.loop import Outcome
from framewire.services.storage import ALERT_STAGE, EVENT_STAGE
from framewire.store.analytics import store_alerts, store_events
from framewire.store.db import open_database


class RowStorage(Stage):
    """A stage that stores each batch of its input with ``upsert`` (one transaction)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.db = open_database(settings.resolved_database_url)

    def process(self, records: list[Any]) -> list[Outcome]:
        self.upsert(records)
        return [None] * len(records)

    def upsert(self, records: Sequence[Any]) -> int:
        """Store ``records`` in one transaction; the rows written."""
        raise NotImplementedError

    def close(self) -> None:
        self.db.close()


class EventStorageStage(RowStorage):
    """events (AnalyticsEvent) → rows of the events table."""

    spec = EVENT_STAGE

    def upsert(self, records: Sequence[Any]) -> int:
        return store_events(self.db, records)


class AlertStorageStage(RowStorage):
    """alerts (Alert) → rows of the alerts table."""

    spec = ALERT_STAGE

    def upsert(self, records: Sequence[Any]) -> int:
        return store_alerts(self.db, records)
