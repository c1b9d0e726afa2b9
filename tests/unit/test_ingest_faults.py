"""Ingest under faults: a frame counts as published on the broker's acknowledgement, one the
broker never acknowledges is dropped as ``publish_failed`` (and logged), and a full blob disk
pauses the camera (a ``disk_full`` fault in ``framewire status``) until space is freed, with
no frame lost. On the session's embedded broker and a real, full tmpfs."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from framewire.broker.client import client_config
from framewire.broker.reading import read_topic
from framewire.capture.ingest import Ingest, SourceFactory
from framewire.capture.sources import CapturedImage
from framewire.contracts import FrameCaptured, utcnow
from framewire.contracts.codec import Codec
from framewire.ops.status import ServiceStatus, heartbeats, instance_problems
from framewire.runtime import StopSignal
from tests.fixtures.common import unavailable
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration

FRAMES = 3


def frames(count: int = FRAMES) -> list[bytes]:
    """Distinct JPEGs (about 8 KB each): each its own blob."""
    return [jpeg(synthetic_frame(i)) for i in range(count)]


def published(site: Site, camera: str) -> list[FrameCaptured]:
    codec = Codec()
    records = [codec.decode(m.value(), FrameCaptured)
               for m in read_topic(site.settings, site.settings.topic("frames.raw"))]
    return sorted((r for r in records if r.camera_id == camera), key=lambda r: r.seq)


# -- acknowledgements ---------------------------------------------------------------------


def test_frames_count_as_published_once_the_broker_acknowledges_them(site: Site):
    ingest = Ingest(site.settings, stop=StopSignal(install=False))
    for data in frames():
        assert ingest.offer("cam-ack", CapturedImage(data, utcnow(), "test"))
    ingest.close()

    counters = ingest.publisher.counters
    assert ingest.sent == ingest.settled == FRAMES
    assert counters.records_out == len(published(site, "cam-ack")) == FRAMES
    assert (counters.dropped, counters.drop_reasons) == (0, {})


def test_frames_the_broker_never_acknowledges_are_dropped_as_publish_failed_and_logged(
        site: Site, caplog: pytest.LogCaptureFixture):
    # frames.raw is gone: the broker answers "unknown topic" and never takes the frames, so
    # each runs out of its delivery time (1 s here) unacknowledged
    site.env["FRAMEWIRE_KAFKA"] = '{"message.timeout.ms": 1000}'
    admin = AdminClient(client_config(site.settings))
    for done in admin.delete_topics([site.settings.topic("frames.raw")]).values():
        done.result(10)
    ingest = Ingest(site.settings, stop=StopSignal(install=False))
    with caplog.at_level(logging.ERROR, logger="framewire.capture.ingest"):
        for data in frames():
            ingest.offer("cam-refused", CapturedImage(data, utcnow(), "test"))
        ingest.close()

    counters = ingest.publisher.counters
    assert ingest.sent == ingest.settled == FRAMES
    assert counters.records_out == 0
    assert counters.drop_reasons == {"publish_failed": FRAMES}
    assert counters.dropped == FRAMES
    # one line for the burst, with the broker's error
    lines = [r for r in caplog.records if r.getMessage().startswith("frames not published")]
    assert len(lines) == 1
    assert "timed out" in lines[0].error


# -- a full blob disk ---------------------------------------------------------------------


@dataclass
class FullDisk:
    root: Path
    filler: Path

    def free(self) -> None:
        self.filler.unlink()


def fill(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem has no space left."""
    chunk = bytes(64 * 1024)
    with path.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    """A 256 KiB tmpfs of its own, filled up (mounting needs root)."""
    root = tmp_path / "blobs"
    root.mkdir()
    if shutil.which("mount") is None:
        unavailable("no mount command: a full disk needs a tmpfs of its own")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        filler = root / "filler"
        fill(filler)
        yield FullDisk(root, filler)
    finally:
        subprocess.run(["umount", str(root)], check=True)


def counted_source(images: list[bytes], reads: list[int]) -> SourceFactory:
    def factory(stop: threading.Event) -> Iterator[CapturedImage]:
        for i, data in enumerate(images):
            reads.append(i)
            yield CapturedImage(data, utcnow(), f"frame-{i}")

    return factory


def ingest_problems(site: Site) -> list[str]:
    beats = [b for b in heartbeats(site.settings, Codec()) if b.service == "ingest"]
    return instance_problems(ServiceStatus("ingest", beats))


def ingest_on(site: Site, full_disk: FullDisk) -> Ingest:
    """An ingest whose every frame is bigger than the inline limit: each goes to the (full)
    blob store (privacy mode off: with it on, raw frames never go there)."""
    site.env["FRAMEWIRE_BLOB_DIR"] = str(full_disk.root)
    site.env["FRAMEWIRE_PRIVACY_MODE"] = "false"
    site.env["FRAMEWIRE_MAX_INLINE_BYTES"] = "1024"
    return Ingest(site.settings, stop=StopSignal(install=False))


def test_a_full_blob_disk_pauses_the_camera_with_a_status_problem_and_loses_no_frame(
        site: Site, full_disk: FullDisk):
    ingest = ingest_on(site, full_disk)
    counters, reads = ingest.publisher.counters, []
    runner = threading.Thread(target=ingest.run,
                              args=({"cam-disk": counted_source(frames(), reads)},), daemon=True)
    runner.start()
    try:
        wait_until(lambda: counters.faults, 10, "the disk_full fault")
        assert counters.faults[0].startswith(f"disk_full: {full_disk.root} is full (No space "
                                             "left on device): capture paused")
        # framewire status names it, from the process's heartbeat
        problems = wait_until(lambda: [p for p in ingest_problems(site) if "disk_full" in p],
                              10, "the fault in a heartbeat")
        assert "it resumes by itself" in problems[0]
        # paused: the frame in hand is kept, no further frame read, nothing dropped
        assert reads == [0]
        assert "cam-disk" in ingest.paused and counters.stalled_cameras == []
        assert counters.state == "paused"
        assert (counters.records_out, counters.dropped) == (0, 0)

        full_disk.free()
        runner.join(30)  # every frame written and published, the source at its end
        assert not runner.is_alive(), "ingest did not finish after space was freed"
    finally:
        ingest.stop.set()
        runner.join(30)

    assert counters.faults == []
    assert (counters.dropped, counters.drop_reasons) == (0, {})
    assert counters.records_out == FRAMES
    records = published(site, "cam-disk")
    assert [r.seq for r in records] == list(range(FRAMES))  # no gap: no frame lost
    assert [r.source for r in records] == [f"frame-{i}" for i in range(FRAMES)]
    assert all(r.image is None and r.image_uri for r in records)
    assert len(list(full_disk.root.rglob("*.bin"))) == FRAMES


def test_stopping_while_paused_on_a_full_disk_drops_the_frame_in_hand_as_disk_full(
        site: Site, full_disk: FullDisk):
    ingest = ingest_on(site, full_disk)
    counters, result = ingest.publisher.counters, []
    image = CapturedImage(frames(1)[0], utcnow(), "test")
    capturing = threading.Thread(target=lambda: result.append(ingest.capture("cam-x", image)))
    capturing.start()
    wait_until(lambda: counters.faults, 10, "the disk_full fault")
    ingest.stop.set()
    capturing.join(10)
    ingest.close()

    assert result == [None]
    assert counters.drop_reasons == {"disk_full": 1}
    assert counters.dropped == 1


def test_a_full_blob_store_is_a_systemic_fault_for_every_stage_not_a_bad_record(
        full_disk: FullDisk):
    from framewire.errors import SystemicError
    from framewire.store.blobs import BlobStore

    with pytest.raises(SystemicError, match="is full") as raised:
        BlobStore(full_disk.root).put(b"pixels" * 50_000)
    assert "resumes by itself" in raised.value.fault
    assert [p.name for p in full_disk.root.rglob(".tmp-*")] == []  # nothing half-written left


def test_a_frame_refused_as_too_large_is_dead_lettered_without_its_bytes(site: Site):
    from framewire.contracts import DeadLetter
    from framewire.ops.status import dead_letters

    site.env["FRAMEWIRE_MAX_UPLOAD_BYTES"] = "2048"
    ingest = Ingest(site.settings, stop=StopSignal(install=False))
    big = jpeg(synthetic_frame(3))
    assert len(big) > 2048
    assert not ingest.offer("cam-big", CapturedImage(big, utcnow(), "test"))
    ingest.close()
    wait_until(lambda: dead_letters(site.settings), 30, "the dead letter")
    [(_, letter)] = dead_letters(site.settings)
    assert isinstance(letter, DeadLetter) and letter.code == "too_large"
    assert (letter.payload, letter.payload_uri) == (None, None)
    assert not list(site.settings.resolved_blob_dir.rglob("*.bin"))  # nothing kept on disk
