"""Storage of the analytics' records: events by ``event_id``, alert changes by
``(alert_id, state)``; a redelivered record never makes a second row."""

from __future__ import annotations

from framewire.analytics.records import Alert, AnalyticsEvent
from framewire.config import Settings
from framewire.runtime import Stage
from framewire.runtime.loop import Outcome
from framewire.services.storage import ALERT_STAGE, EVENT_STAGE
from framewire.store.analytics import store_alerts, store_events
from framewire.store.db import open_database


class EventStorageStage(Stage):
    """events (AnalyticsEvent) → rows of the events table."""

    spec = EVENT_STAGE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.db = open_database(settings.resolved_database_url)

    def process(self, records: list[AnalyticsEvent]) -> list[Outcome]:
        store_events(self.db, records)
        return [None] * len(records)

    def close(self) -> None:
        self.db.close()


class AlertStorageStage(Stage):
    """alerts (Alert) → rows of the alerts table."""

    spec = ALERT_STAGE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.db = open_database(settings.resolved_database_url)

    def process(self, records: list[Alert]) -> list[Outcome]:
        store_alerts(self.db, records)
        return [None] * len(records)

    def close(self) -> None:
        self.db.close()
