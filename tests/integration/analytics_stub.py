"""The stages the analytics tests need in a site's topology, whatever is registered now.

``events`` and ``alerts`` are written by the analytics service; where it is not registered
(yet), ``WRITER`` stands in as their declared writer, so the storage stages that read them
fit the topology. Records are then published by the test itself. ``extra_stages()`` is the
``stages`` setting of such a site: the storage stages not registered as entry points, and
the stand-in writer where no stage writes ``events``.
"""

from __future__ import annotations

import json

from framewire.analytics.records import Alert, AnalyticsEvent
from framewire.topology import Output, StageSpec, topology

WRITER = StageSpec(
    name="analytics_stand_in", entry="tests.integration.analytics_stub:never_run",
    summary="declares events and alerts for tests (records published by the test)",
    outputs=(Output("events", AnalyticsEvent), Output("alerts", Alert)))


def never_run(*_args: object) -> None:
    raise RuntimeError("the stand-in writer of events and alerts is declared, never run")


def extra_stages() -> str:
    """The ``stages`` setting (JSON) of a site that stores events and alerts."""
    registered = topology()
    extra = [f"framewire.services.storage:{name}" for stage, name in
             (("event_storage", "EVENT_STAGE"), ("alert_storage", "ALERT_STAGE"))
             if stage not in registered.names]
    if "events" not in registered.topics:
        extra.append("tests.integration.analytics_stub:WRITER")
    return json.dumps(extra)
