"""Records written straight onto the topics by someone with access to the broker: nothing is
read outside the blob store, nothing is published outside the site's topics, and the stage
that met them goes on."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AdminClient

from framewire.broker.reading import read_topic
from framewire.config import Settings
from framewire.contracts import DeadLetter, FrameCaptured, FrameHeader, utcnow
from framewire.ops.replay import replay
from framewire.ops.status import dead_letters
from framewire.runtime import Publisher
from framewire.store.db import open_database
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration


def frame(camera: str, seq: int, image: bytes | None = None,
          image_uri: str | None = None) -> FrameCaptured:
    return FrameCaptured(
        header=FrameHeader(frame_id=f"{camera}-{seq}", camera_id=camera, seq=seq,
                           captured_at=utcnow(), ingested_at=utcnow(), image_uri=image_uri),
        source="attacker", content_type="image/jpeg", width=640, height=360, image=image)


def stored(settings: Settings) -> list[str]:
    """Frame ids of the stored results, sorted."""
    db = open_database(settings.resolved_database_url)
    try:
        return sorted(db.frame_ids())
    finally:
        db.close()


def test_blob_references_outside_the_store_are_dead_lettered_unopened(site: Site):
    settings = site.settings
    blobs = settings.resolved_blob_dir.resolve()
    fifo = blobs / "ab" / "ab" / f"{'ab' * 32}.bin"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # a stage that opened it would hang there
    hostile = {"cam-etc": "file:///etc/hostname", "cam-zero": "file:///dev/zero",
               "cam-fifo": fifo.as_uri(),
               "cam-dotdot": f"{blobs.as_uri()}/../../../etc/{'cd' * 32}.bin"}
    site.start("preprocess")
    pub = Publisher(settings, "test")
    try:
        for camera, uri in hostile.items():
            pub.publish("frames.raw", frame(camera, 0, image_uri=uri), key=camera)
        pub.publish("frames.raw", frame("cam-good", 0, image=jpeg(synthetic_frame(1))),
                    key="cam-good")
        pub.flush(30)
    finally:
        pub.close()

    def letters() -> dict[str, DeadLetter]:
        return {d.camera_id or "": d for _, d in dead_letters(settings)}

    wait_until(lambda: set(hostile) <= set(letters()), 60, "a dead letter per hostile record")
    found = letters()
    assert {cam: found[cam].code for cam in hostile} == dict.fromkeys(hostile, "bad_blob_uri")
    assert all(found[cam].service == "preprocess" for cam in hostile)
    ready = lambda: [m.key() for m in read_topic(settings, settings.topic("frames.ready"))]  # noqa: E731
    wait_until(lambda: ready() == [b"cam-good"], 60, "the good frame through preprocess")
    assert site.alive("preprocess")


def test_replay_publishes_only_to_the_sites_own_topics(site: Site):
    settings = site.settings
    foreign = f"{site.prefix}not-ours"
    pub = Publisher(settings, "test")
    try:
        for i, topic in enumerate((foreign, settings.topic("frames.raw"))):
            letter = DeadLetter(service="preprocess", code="corrupt_image", reason="planted",
                                failed_at=utcnow(), source_topic=topic, source_partition=0,
                                source_offset=i, camera_id="cam-x", frame_id=f"f{i}",
                                key=b"cam-x", payload=b"payload")
            pub.produce_raw(settings.topic("deadletter"), pub.codec.encode(letter), b"cam-x",
                            None)
        pub.flush(30)
    finally:
        pub.close()
    wait_until(lambda: len(dead_letters(settings)) == 2, 30, "the two planted dead letters")

    outcome = replay(settings, dead_letters(settings))

    assert outcome == {"skipped (foreign_topic)": 1,
                       f"replayed to {settings.topic('frames.raw')}": 1}
    topics = AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(
        timeout=10).topics
    assert foreign not in topics
    assert [m.value() for m in read_topic(settings, settings.topic("frames.raw"))] == [
        b"payload"]



def test_ingest_without_cameras_idles_and_stays_up_instead_of_exiting(site: Site):
    from framewire.contracts.codec import Codec
    from framewire.ops.status import heartbeats

    site.start("ingest")  # no --demo, no cameras configured
    codec = Codec()

    def ingest_state() -> str | None:
        beats = [b for b in heartbeats(site.settings, codec) if b.service == "ingest"]
        return beats[-1].state if beats else None

    wait_until(lambda: ingest_state() == "idle", 30, "ingest to report that it idles")
    # still the same process: it did not exit (the supervisor would restart it, in a storm)
    assert site.alive("ingest")
    assert "no cameras configured" in site.logs()


def test_a_jpeg_bomb_on_frames_ready_is_refused_by_its_header_and_the_batch_goes_on(
        site: Site):
    import numpy as np

    from framewire.contracts import FramePreprocessed
    from framewire.models.manifest import load_manifest
    from framewire.pixels.encoding import encode_jpeg
    from tests.fixtures.images import jpeg_claiming_size

    settings = site.settings
    model = load_manifest(settings.inference.model)
    w, h = model.input_width, model.input_height

    def ready(camera: str, pixels: bytes) -> FramePreprocessed:
        now = utcnow()
        return FramePreprocessed(
            header=FrameHeader(frame_id=f"{camera}-0", camera_id=camera, seq=0, captured_at=now,
                               ingested_at=now),
            preprocessed_at=now, orig_width=w, orig_height=h, input_width=w, input_height=h,
            scale=1.0, pad_x=0.0, pad_y=0.0, pixel_format="jpeg", brightness=100.0,
            sharpness=100.0, too_dark=False, blurred=False, frozen=False, pixels=pixels)

    site.start("inference", "storage")
    pub = Publisher(settings, "test")
    try:
        for camera, pixels in (("cam-good-1", encode_jpeg(np.zeros((h, w, 3), np.uint8))),
                               ("cam-bomb", jpeg_claiming_size(32768, 32768)),
                               ("cam-good-2", encode_jpeg(np.full((h, w, 3), 90, np.uint8)))):
            pub.publish("frames.ready", ready(camera, pixels), key=camera)
        pub.flush(30)
    finally:
        pub.close()

    wait_until(lambda: stored(settings) == ["cam-good-1-0", "cam-good-2-0"], 120,
               "the two good frames stored")
    wait_until(lambda: len(dead_letters(settings)) == 1, 30, "the bomb's dead letter")
    [(_, letter)] = dead_letters(settings)
    assert (letter.camera_id, letter.service, letter.code) == (
        "cam-bomb", "inference", "corrupt_pixels")
    assert site.alive("inference") and site.alive("storage")


def test_a_5000_character_frame_id_is_dead_lettered_at_decode_and_the_rest_is_stored(
        site: Site):
    from framewire.contracts import InferenceResult

    settings = site.settings

    def result(frame_id: str) -> InferenceResult:
        now = utcnow()
        return InferenceResult(
            header=FrameHeader(frame_id=frame_id, camera_id="cam-r", seq=0, captured_at=now,
                               ingested_at=now),
            preprocessed_at=now, inferred_at=now, orig_width=640, orig_height=480,
            model_name="m", model_version="1", provider="cpu", too_dark=False, blurred=False,
            frozen=False)

    site.start("storage")
    pub = Publisher(settings, "test")
    try:
        for frame_id in ("good-1", "x" * 5000, "good-2"):
            pub.publish("detections", result(frame_id), key="cam-r")
        pub.flush(30)
    finally:
        pub.close()

    wait_until(lambda: stored(settings) == ["good-1", "good-2"], 60, "the two good results stored")
    wait_until(lambda: len(dead_letters(settings)) == 1, 30, "the long id's dead letter")
    [(_, letter)] = dead_letters(settings)
    assert (letter.service, letter.code) == ("storage", "invalid_record")
    assert "header.frame_id" in letter.reason
    assert site.alive("storage")
