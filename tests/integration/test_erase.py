"""``framewire erase``: nothing of the camera remains in the database or the blob folder, and
the other cameras keep everything."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import sqlalchemy as sa

from framewire.broker.reading import read_topic
from framewire.contracts import DeadLetter, FrameCaptured, FramePreprocessed
from framewire.contracts.codec import Codec
from framewire.store.db import open_database
from framewire.store.tables import (
    BLOB_COLUMNS,
    camera_table,
    detection_table,
    result_table,
    span_table,
)
from tests.fixtures.images import synthetic_frame
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration


def framewire(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framewire.cli", *args],
                          env={**os.environ, **site.env}, capture_output=True, text=True,
                          timeout=120, check=False)


def camera_rows(url: str, camera: str) -> dict[str, int]:
    """Rows that name the camera, per table."""
    with open_database(url) as db, db.engine.connect() as conn:
        frames = sa.select(result_table.c.frame_id).where(result_table.c.camera_id == camera)
        count = lambda q: conn.execute(sa.select(sa.func.count()).select_from(q)).scalar()  # noqa: E731
        return {
            "results": count(frames.subquery()),
            "detections": count(sa.select(detection_table).where(
                detection_table.c.frame_id.in_(frames)).subquery()),
            "cameras": count(sa.select(camera_table).where(
                camera_table.c.camera_id == camera).subquery()),
            "spans": count(sa.select(span_table).where(
                span_table.c.camera_id == camera).subquery()),
        }


def blob_uris_of(site: Site, camera: str) -> set[str]:
    """Every blob the camera's records on the topics and its stored results name."""
    settings, codec, uris = site.settings, Codec(), set()
    with open_database(settings.resolved_database_url) as db, db.engine.connect() as conn:
        for row in conn.execute(sa.select(*(result_table.c[c] for c in BLOB_COLUMNS)).where(
                result_table.c.camera_id == camera)):
            uris |= set(row) - {None}
    for topic, contract in (("frames.raw", FrameCaptured), ("frames.ready", FramePreprocessed),
                            ("deadletter", DeadLetter)):
        for msg in read_topic(settings, settings.topic(topic)):
            record = codec.decode(msg.value(), contract)
            if record.camera_id == camera:
                uris |= {getattr(record, a, None) for a in ("image_uri", "pixels_uri",
                                                            "payload_uri")} - {None}
    return uris


def test_erase_leaves_nothing_of_the_camera_in_the_database_or_the_blob_folder(
        site: Site, tmp_path: Path):
    site.env["FRAMEWIRE_MAX_INLINE_BYTES"] = "1024"  # every frame and pixel payload is a blob
    site.env["FRAMEWIRE_PRIVACY_MODE"] = "false"  # (privacy mode keeps raw frames inline)
    site.env["FRAMEWIRE_INFERENCE__STORE_FRAMES"] = "all"  # and a stored frame per result
    settings = site.settings
    site.start("preprocess", "inference", "storage")
    originals: dict[str, set[str]] = {}
    for camera, count in (("cam-gone", 3), ("cam-kept", 2)):
        folder = tmp_path / camera
        folder.mkdir()
        for i in range(count):
            cv2.imwrite(str(folder / f"{i}.jpg"), synthetic_frame(i))  # the same for both
        (folder / "9.jpg").write_bytes((folder / "0.jpg").read_bytes()[:3000])  # corrupt
        originals[camera] = {hashlib.sha256(p.read_bytes()).hexdigest()
                             for p in folder.iterdir()}
        done = framewire(site, "publish", "--camera", camera, "--path", str(folder))
        assert done.returncode == 0, done.stderr
    url = settings.resolved_database_url
    wait_until(lambda: camera_rows(url, "cam-gone")["results"] == 3
               and camera_rows(url, "cam-kept")["results"] == 2, 120, "both cameras stored")
    wait_until(lambda: len({d.camera_id for d in (
        Codec().decode(m.value(), DeadLetter) for m in read_topic(
            settings, settings.topic("deadletter")))}) == 2, 60, "each camera's dead letter")
    gone_blobs, kept_blobs = blob_uris_of(site, "cam-gone"), blob_uris_of(site, "cam-kept")
    detections = camera_rows(url, "cam-gone")["detections"]
    # the same images as cam-kept's first two (and its corrupt one): content-addressed, shared
    assert len(gone_blobs - kept_blobs) >= 2

    erased = framewire(site, "erase", "--camera", "cam-gone", "--json")

    assert erased.returncode == 0, erased.stderr
    report = json.loads(erased.stdout)
    assert report["camera_id"] == "cam-gone" and report["before"] is None
    assert report["removed"]["results"] == 3 and report["removed"]["cameras"] == 1
    assert report["removed"]["detections"] == detections and report["removed"]["spans"] > 0
    assert report["removed"]["blobs"] == len(gone_blobs - kept_blobs)
    assert report["left_on_topics"]["dead_letters"] == 1
    assert camera_rows(url, "cam-gone") == dict.fromkeys(
        ("results", "detections", "cameras", "spans"), 0)
    assert camera_rows(settings.resolved_span_database_url, "cam-gone")["spans"] == 0
    left = {p.name.removesuffix(".bin") for p in settings.resolved_blob_dir.rglob("*.bin")}
    assert not left & (originals["cam-gone"] - originals["cam-kept"])
    # what is left is exactly what cam-kept's records name: the shared blobs stayed
    assert {Path(u).name.removesuffix(".bin") for u in kept_blobs} == left
    assert camera_rows(url, "cam-kept")["results"] == 2
