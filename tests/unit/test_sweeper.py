"""Retention: the sweeper deletes each camera's rows, spans and frames past its retention, and
old blobs no row names; what it deleted is counted per kind (framewire_swept_total)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from framewire.config import CameraSettings, Settings, load_settings
from framewire.contracts import Detection, FrameHeader, InferenceResult
from framewire.ops.sweeper import retention_of, sweep
from framewire.store.blobs import BlobStore
from framewire.store.db import open_database
from framewire.store.tables import span_table

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def result(frame_id: str, camera: str, age: timedelta, image_uri: str,
           frame_uri: str | None = None, thumbnail_uri: str | None = None) -> InferenceResult:
    at = NOW - age
    return InferenceResult(
        header=FrameHeader(frame_id=frame_id, camera_id=camera, seq=0, captured_at=at,
                           ingested_at=at, image_uri=image_uri),
        preprocessed_at=at, inferred_at=at, orig_width=64, orig_height=64, model_name="m",
        model_version="1", provider="cpu", too_dark=False, blurred=False, frozen=False,
        detections=[Detection(label="face", class_id=0, score=0.9, x1=1, y1=1, x2=5, y2=5)],
        frame_uri=frame_uri, thumbnail_uri=thumbnail_uri, faces_blurred=1)


def configured(settings: Settings) -> dict[str, CameraSettings]:
    """The cameras of the setting, as the site runs them (no cameras topic here)."""
    return {c.camera_id: c for c in settings.cameras}


def swept(kind: str) -> float:
    return REGISTRY.get_sample_value("framewire_swept_total", {"kind": kind}) or 0.0


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWIRE_HOME", str(tmp_path))
    return load_settings(data_retention="30d", cameras=[
        CameraSettings(camera_id="cam-short", url="file:///dev/null", retention="1h")])


def test_each_camera_keeps_its_data_for_its_own_retention_and_no_longer(settings):
    blobs = BlobStore(settings.resolved_blob_dir)
    uri = {name: blobs.put(name.encode() * 100)[0]
           for name in ("s-old", "s-new", "d-old", "s-old-frame", "s-old-thumb", "s-new-frame")}
    orphan_old, _ = blobs.put(b"letterboxed pixels" * 100)
    orphan_new, _ = blobs.put(b"a dead letter's payload" * 100)
    old = (NOW - timedelta(days=40)).timestamp()
    for aged in (orphan_old, uri["s-new-frame"]):  # the stored frame is named: it stays
        os.utime(blobs.locate(aged)[0], (old, old))
    with open_database(settings.resolved_database_url) as db:
        db.upsert_results([
            result("s-old", "cam-short", timedelta(hours=2), uri["s-old"], uri["s-old-frame"],
                   uri["s-old-thumb"]),
            result("s-new", "cam-short", timedelta(minutes=10), uri["s-new"],
                   uri["s-new-frame"]),
            result("d-old", "cam-default", timedelta(hours=2), uri["d-old"]),  # within 30d
        ])
    with open_database(settings.resolved_span_database_url) as spans, spans.engine.begin() as c:
        for span_id, frame, camera, age in (("a" * 16, "s-old", "cam-short", 2 * 3600),
                                            ("b" * 16, "s-new", "cam-short", 60)):
            start = int((NOW.timestamp() - age) * 1e9)
            c.execute(sa.insert(span_table).values(
                span_id=span_id, trace_id="c" * 32, service="storage", name="x",
                start_ns=start, end_ns=start + 1, status="OK", frame_id=frame,
                camera_id=camera, attributes={}))
    before = {kind: swept(kind) for kind in ("results", "detections", "spans", "blobs")}

    deleted = sweep(settings, NOW, configured(settings))

    assert retention_of(settings, "cam-short") == timedelta(hours=1)
    assert retention_of(settings, "cam-default") == timedelta(days=30)
    assert (deleted["results"], deleted["detections"], deleted["spans"]) == (1, 1, 1)
    assert deleted["blobs"] == 4  # s-old's original, stored frame and thumbnail; the orphan
    with open_database(settings.resolved_database_url) as db:
        assert sorted(db.frame_ids()) == ["d-old", "s-new"]
    left = {p.as_uri() for p in settings.resolved_blob_dir.rglob("*.bin")}
    assert left == {uri["s-new"], uri["s-new-frame"], uri["d-old"], orphan_new}
    with open_database(settings.resolved_span_database_url) as spans, \
            spans.engine.connect() as c:
        assert [r.frame_id for r in c.execute(sa.select(span_table))] == ["s-new"]
    for kind, count in (("results", 1), ("detections", 1), ("spans", 1), ("blobs", 4)):
        assert swept(kind) - before[kind] == count
    assert sweep(settings, NOW, configured(settings))["results"] == 0  # nothing more to do


def test_a_retention_that_is_not_a_duration_fails_at_start_naming_the_setting(tmp_path):
    from framewire.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="data_retention"):
        load_settings(data_retention="forever")


def test_a_log_past_its_size_is_rotated_and_its_writer_goes_on_at_the_new_end(tmp_path):
    from framewire.ops.logrotate import rotate_logs

    path = tmp_path / "inference.log"
    writer = path.open("ab")  # as the supervisor opens a child's log
    for generation in range(4):
        writer.write(f"generation {generation}\n".encode() * 100)
        writer.flush()
        assert rotate_logs(tmp_path, 1000, backups=2) == ["inference.log"]
    writer.write(b"after\n")
    writer.close()
    assert path.read_bytes() == b"after\n"  # written at the new end, no hole before it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "inference.log", "inference.log.1", "inference.log.2"]
    assert (tmp_path / "inference.log.1").read_text().startswith("generation 3")
    assert (tmp_path / "inference.log.2").read_text().startswith("generation 2")
    assert rotate_logs(tmp_path, 1000, backups=2) == []  # small again: left alone
