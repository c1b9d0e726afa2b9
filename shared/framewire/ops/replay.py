"""Re-publishing dead letters to where they came from, once the cause is fixed."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from framewire.config import Settings
from framewire.contracts import DeadLetter
from framewire.errors import ConfigError, DataError
from framewire.store.blobs import BlobStore, resolve_payload
from framewire.topology import topology

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``1d`` ago, or an ISO-8601 time (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: write a duration like 10m, 2h, 1d or an ISO time "
                          "like 2026-11-25T10:00:00") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def select(letters: list[tuple[Any, DeadLetter]], reason: str | None,
           since: datetime | None) -> list[tuple[Any, DeadLetter]]:
    """Dead letters matching a reason code (or a word of the reason) and a start time."""
    chosen = []
    for msg, letter in letters:
        if reason and reason != letter.code and reason.lower() not in letter.reason.lower():
            continue
        if since and letter.failed_at < since:
            continue
        chosen.append((msg, letter))
    return chosen


def replay(settings: Settings, letters: list[tuple[Any, DeadLetter]]) -> Counter[str]:
    """Re-publish each letter's original record to its source topic, keeping its frame id.

    Letters rejected at ingest (no source topic: the frame was never published) go through
    ingest validation again as new frames. Returns how many were replayed, per outcome.
    """
    from framewire.capture.ingest import Ingest
    from framewire.capture.sources import CapturedImage
    from framewire.runtime import Publisher, StopSignal

    blobs = BlobStore.from_settings(settings)
    publisher = Publisher(settings, "replay")
    ingest: Ingest | None = None
    outcome: Counter[str] = Counter()
    # the topics a stage reads: where a record can be read again from
    own_topics = {settings.topic(spec.input) for spec in topology(settings).consumers
                  if spec.input is not None}
    try:
        for msg, letter in letters:
            if letter.source_topic and letter.source_topic not in own_topics:
                # a dead letter is a record like any other: one planted on the topic must not
                # make replay publish to a topic that is not this site's
                outcome["skipped (foreign_topic)"] += 1
                continue
            try:
                payload = resolve_payload(letter.payload, letter.payload_uri, None, blobs)
            except DataError as exc:
                outcome[f"skipped ({exc.code})"] += 1
                continue
            if letter.source_topic:
                publisher.produce_raw(letter.source_topic, payload, letter.key, msg.headers())
                outcome[f"replayed to {letter.source_topic}"] += 1
            else:
                if ingest is None:
                    ingest = Ingest(settings, stop=StopSignal(install=False), publisher=publisher)
                camera = letter.camera_id or "unknown"
                ok = ingest.offer(camera, CapturedImage(payload, letter.failed_at, "replay"))
                outcome["re-ingested" if ok else "rejected again at ingest"] += 1
        publisher.flush(settings.shutdown_timeout_s)
        # frames re-ingested count as published once acknowledged: those the broker refused
        # are drops (publish_failed), not replayed
        refused = publisher.counters.drop_reasons.get("publish_failed", 0)
        if refused:
            outcome["re-ingested"] -= refused
            outcome["not published (publish_failed)"] += refused
    finally:
        publisher.close()
    return +outcome
