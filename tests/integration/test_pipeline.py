"""The four services end to end on a real broker: counts, order, faces, bad input, idempotence."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import replace

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from framewire.broker.reading import read_topic
from framewire.capture.ingest import Ingest
from framewire.capture.sources import CapturedImage
from framewire.contracts import FrameCaptured, FrameHeader, InferenceResult, utcnow
from framewire.contracts.codec import Codec
from framewire.models.manifest import load_manifest
from framewire.ops.status import dead_letters
from framewire.pixels.letterbox import letterbox
from framewire.runtime import Publisher, StopSignal
from framewire.services.inference.models import Detector
from framewire.store.blobs import BlobStore
from framewire.store.db import open_database
from tests.fixtures.images import ASTRONAUT_FACE, bad_inputs, jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration
STAGES = ("preprocess", "inference", "storage")


def publish(site: Site, frames: list[tuple[str, bytes]]) -> Ingest:
    """Publish (camera, bytes) pairs through the real ingest code; returns it for its counters."""
    ingest = Ingest(site.settings, stop=StopSignal(install=False))
    for camera, data in frames:
        ingest.offer(camera, CapturedImage(data, utcnow(), "test"))
    ingest.close()
    return ingest


def stored_count(site: Site) -> int:
    db = open_database(site.settings.resolved_database_url)
    try:
        return db.count_results()
    finally:
        db.close()


def test_four_cameras_of_fifty_frames_make_exactly_200_rows_in_per_camera_order(site: Site):
    site.start(*STAGES)
    frames = [(f"cam-{c}", jpeg(synthetic_frame(i, c))) for i in range(50) for c in range(4)]
    ingest = publish(site, frames)
    assert ingest.publisher.counters.records_out == 200

    wait_until(lambda: stored_count(site) >= 200, 180, "200 stored results")
    assert stored_count(site) == 200

    seqs: dict[str, list[int]] = defaultdict(list)
    codec = Codec()
    for msg in read_topic(site.settings, site.settings.topic("detections")):
        result = codec.decode(msg.value(), InferenceResult)
        seqs[result.camera_id].append(result.seq)
    assert {cam: seq for cam, seq in seqs.items()} == {f"cam-{c}": list(range(50))
                                                      for c in range(4)}
    assert all(site.alive(s) for s in STAGES)

    # ingest placed the 4 cameras on the 4 partitions, one each, and every later stage wrote
    # each camera's records to the partition they came from
    where: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for topic in ("frames.raw", "frames.ready", "detections"):
        for msg in read_topic(site.settings, site.settings.topic(topic)):
            where[msg.key().decode()].add((topic, msg.partition()))
    partitions = {cam: {p for _, p in places} for cam, places in where.items()}
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert sorted(p for (p,) in partitions.values()) == [0, 1, 2, 3]


def faces_in(detector: Detector, blobs: BlobStore, uri: str | None) -> int:
    """How many faces the site's detector finds in a stored JPEG."""
    assert uri is not None
    image = cv2.imdecode(np.frombuffer(blobs.get(uri), np.uint8), cv2.IMREAD_COLOR)
    return len(detector.detect([letterbox(image, 640, 384)[0]])[0])


def test_face_photo_gives_a_face_box_and_is_stored_blurred_and_never_raw(site: Site):
    # every payload over 1 KiB would be a blob, but privacy mode keeps raw frames inline;
    # cam-open is out of privacy mode: the control
    site.env["FRAMEWIRE_MAX_INLINE_BYTES"] = "1024"
    site.env["FRAMEWIRE_CAMERAS"] = json.dumps(
        [{"camera_id": "cam-open", "url": "/unused", "privacy_mode": False}])
    site.start(*STAGES)
    photo = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    raw = {"cam-face": jpeg(photo, 95), "cam-open": jpeg(photo, 90)}
    publish(site, list(raw.items()))
    wait_until(lambda: stored_count(site) >= 2, 120, "both face results")
    with open_database(site.settings.resolved_database_url) as db:
        (row,) = db.query_results(camera_id="cam-face")
        (control,) = db.query_results(camera_id="cam-open")
    faces = [d for d in row.detections if d.label == "face"]
    assert len(faces) == 1
    true_box = ASTRONAUT_FACE
    got = (faces[0].x1, faces[0].y1, faces[0].x2, faces[0].y2)
    assert max(abs(a - b) for a, b in zip(got, true_box, strict=True)) <= 15, got

    # the detector, run again on what was stored, finds no face; the control still has one
    blobs, detector = BlobStore.from_settings(site.settings), Detector(
        load_manifest("centerface"), ["CPUExecutionProvider"])
    assert (row.privacy, row.faces_blurred, control.privacy) == (True, 1, False)
    assert faces_in(detector, blobs, row.frame_uri) == 0
    assert faces_in(detector, blobs, row.thumbnail_uri) == 0
    assert faces_in(detector, blobs, control.frame_uri) == 1
    # the private raw frame travelled inline and was never written to the blob store
    stored = {p.name.removesuffix(".bin") for p in blobs.root.rglob("*.bin")}
    assert hashlib.sha256(raw["cam-face"]).hexdigest() not in stored
    assert hashlib.sha256(raw["cam-open"]).hexdigest() in stored  # the claim check
    records = {r.camera_id: r for r in (
        Codec().decode(m.value(), FrameCaptured)
        for m in read_topic(site.settings, site.settings.topic("frames.raw")))}
    assert records["cam-face"].image == raw["cam-face"] and records["cam-face"].image_uri is None


def test_bad_inputs_are_dead_lettered_with_distinct_reasons_and_services_stay_alive(site: Site):
    site.start(*STAGES)
    bad = bad_inputs()
    publish(site, [(f"cam-{name}", data) for name, data in bad.items()])
    wait_until(lambda: len(dead_letters(site.settings)) >= len(bad), 120, "4 dead letters")
    letters = {d.camera_id: d for _, d in dead_letters(site.settings)}
    assert set(letters) == {f"cam-{name}" for name in bad}
    codes = {name: letters[f"cam-{name}"].code for name in bad}
    assert len(set(codes.values())) == len(bad), codes
    assert codes["bomb_60000x60000"] == "too_many_pixels"
    for letter in letters.values():
        assert letter.reason and letter.service in ("ingest", "preprocess")
    # the services are still alive and still work
    publish(site, [("cam-good", jpeg(synthetic_frame(3)))])
    wait_until(lambda: stored_count(site) == 1, 60, "a good frame after the bad ones")
    assert all(site.alive(s) for s in STAGES)


def test_the_same_frame_delivered_twice_makes_one_row(site: Site):
    site.start(*STAGES)
    settings = site.settings
    frame = FrameCaptured(
        header=FrameHeader(frame_id="01JTESTDUPLICATEFRAME00000", camera_id="cam-dup", seq=0,
                           captured_at=utcnow(), ingested_at=utcnow()),
        source="test", content_type="image/jpeg", width=640, height=360,
        image=jpeg(synthetic_frame(7)),
    )
    pub = Publisher(settings, "test")
    pub.publish("frames.raw", frame, key=frame.camera_id)
    pub.publish("frames.raw", frame, key=frame.camera_id)
    other = replace(frame, header=replace(frame.header, frame_id="01JOTHER", seq=1))
    pub.publish("frames.raw", other, key=frame.camera_id)
    pub.flush()
    # the third, distinct frame arrives after both copies: once it is stored, so are they
    wait_until(lambda: stored_count(site) >= 2, 120, "results stored")
    db = open_database(settings.resolved_database_url)
    assert sorted(db.frame_ids()) == sorted(["01JTESTDUPLICATEFRAME00000", "01JOTHER"])
    db.close()


@pytest.mark.slow  # make test stores on PostgreSQL in test_db_backends.py and elsewhere
def test_storage_writes_to_postgresql(broker, tmp_path, postgres_db_url):
    site = Site(broker, tmp_path / "home", database_url=postgres_db_url)
    site.create_topics()
    try:
        site.start(*STAGES)
        publish(site, [("cam-pg", jpeg(synthetic_frame(i))) for i in range(5)])
        wait_until(lambda: stored_count(site) >= 5, 120, "5 results in PostgreSQL")
        assert stored_count(site) == 5
    finally:
        site.stop()


def test_a_publisher_never_auto_creates_a_topic_and_its_heartbeats_make_missing_ones(
        broker, tmp_path):
    """A broker that lost its topics (the embedded one after a crash) would make any topic a
    producer writes to with 4 partitions: records must wait for ensure_topics instead."""
    from confluent_kafka.admin import AdminClient

    from framewire.runtime import Publisher
    from framewire.topology import topology

    fresh = Site(broker, tmp_path / "home", partitions=3)  # no create_topics: none exist
    settings = fresh.settings
    TOPICS = list(topology(settings).topics)  # noqa: N806
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    pub = Publisher(settings, "preprocess")
    try:
        pub.produce_raw(settings.topic("frames.ready"), b"x", b"cam", None)
        pub.producer.flush(3)
        assert settings.topic("frames.ready") not in admin.list_topics(timeout=5).topics
        pub.counters.broker_ok = False  # what the client reports while the broker is away
        pub.start_heartbeats()
        wait_until(lambda: all(settings.topic(t) in admin.list_topics(timeout=5).topics
                               for t in TOPICS), 30, "the heartbeat thread to create topics")
        parts = {t: len(admin.list_topics(timeout=5).topics[settings.topic(t)].partitions)
                 for t in TOPICS}
        assert parts == {t: 1 if topology(settings).topic(t).single_partition else 3
                         for t in TOPICS}
        assert pub.counters.broker_ok
        pub.flush(10)  # the waiting record is delivered once its topic exists
    finally:
        pub.close()
