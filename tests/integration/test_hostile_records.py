"""Records written straight onto the topics by someone with access to the broker: nothing is
read outside the blob store, nothing is published outside the site's topics, and the stage
that met them goes on."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AdminClient

from framewire.broker.reading import read_topic
from framewire.contracts import DeadLetter, FrameCaptured, FrameHeader, utcnow
from framewire.ops.replay import replay
from framewire.ops.status import dead_letters
from framewire.runtime import Publisher
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration


def frame(camera: str, seq: int, image: bytes | None = None,
          image_uri: str | None = None) -> FrameCaptured:
    return FrameCaptured(
        header=FrameHeader(frame_id=f"{camera}-{seq}", camera_id=camera, seq=seq,
                           captured_at=utcnow(), ingested_at=utcnow(), image_uri=image_uri),
        source="attacker", content_type="image/jpeg", width=640, height=360, image=image)


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
