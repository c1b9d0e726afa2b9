"""Records written straight onto the topics by someone with access to the broker: nothing is
read outside the blob store, nothing is published outside the site's topics, and the stage
that met them goes on."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from framewire.broker.reading import read_topic
from framewire.config import Settings
from framewire.contracts import DeadLetter, FrameCaptured, FrameHeader, InferenceResult, utcnow
from framewire.contracts.codec import MAGIC, Codec
from framewire.ops.replay import replay
from framewire.ops.status import dead_letters, heartbeats, site_status
from framewire.runtime import Publisher
from framewire.store.db import open_database
from tests.fixtures.common import unavailable
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import QUICK_FAILOVER, Site, wait_until
from tests.integration.hostile_table import HOSTILE_ROWS, hostile_table

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


# -- the suite: every hostile record at once, on each broker ------------------------------


@dataclass
class Case:
    """One hostile record: where it is written, what should become of it."""

    name: str
    topic: str
    key: str  # the good record written after it has this key too: same partition
    code: str | None  # the expected dead-letter code; None: not a dead letter at all
    service: str | None = None  # the stage expected to dead-letter it

    @property
    def bad_id(self) -> str:
        return BAD_IDS.get(self.key, f"{self.key}-bad")


CASES = [
    Case("blob ref file:///etc/hostname", "frames.raw", "cam-etc", "bad_blob_uri", "preprocess"),
    Case("blob ref file:///dev/zero", "frames.raw", "cam-zero", "bad_blob_uri", "preprocess"),
    Case("blob ref to a FIFO in the store", "frames.raw", "cam-fifo", "bad_blob_uri",
         "preprocess"),
    Case("blob ref with ..", "frames.raw", "cam-dotdot", "bad_blob_uri", "preprocess"),
    Case("malformed frame id", "frames.raw", "cam-badid", "invalid_record", "preprocess"),
    Case("wrong key for the camera", "frames.raw", "cam-key", "unknown_camera", "preprocess"),
    Case("unknown schema fingerprint", "frames.raw", "cam-fp", "unknown_schema", "preprocess"),
    Case("truncated Avro", "frames.raw", "cam-trunc", "undecodable", "preprocess"),
    Case("JPEG bomb (32768x32768)", "frames.ready", "cam-bomb", "corrupt_pixels", "inference"),
    Case("5,000-character frame id", "detections", "cam-longid", "invalid_record", "storage"),
    Case("record that kills its stage", "detections", "cam-crash", "crash_loop", "checker"),
    Case("record that makes its stage raise", "detections", "cam-poison", "retries_exhausted",
         "checker"),
    Case("forged heartbeat", "status", "forged", None),
]
# the hostile records' frame ids where they are not KEY-bad
BAD_IDS = {"cam-badid": "../../etc/passwd x", "cam-longid": "x" * 5000}
CHECKER = "tests.integration.hostile_stage:STAGE"
POISON_PILL_LIMIT = 2


@pytest.fixture(params=["embedded", "kafka"])
def hostile_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """A site with the test stage that crashes: on the embedded broker, then on Apache Kafka."""
    broker = request.getfixturevalue("broker" if request.param == "embedded"
                                     else "kafka_cluster")
    # every frame over 1 KiB goes to the blob store, on a small tmpfs of its own (full disk;
    # privacy mode off, as it keeps raw frames inline)
    # a member that died holds its partitions until its session times out: as short as the
    # broker allows (Apache Kafka: 6 s at least)
    timing = QUICK_FAILOVER if request.param == "kafka" else {
        "session.timeout.ms": 3000, "heartbeat.interval.ms": 500}
    site = Site(broker, tmp_path / "home", stages=json.dumps([CHECKER]),
                poison_pill_limit=POISON_PILL_LIMIT, kafka=json.dumps(timing),
                max_inline_bytes=1024, privacy_mode=False)
    blobs = site.settings.resolved_blob_dir
    blobs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(blobs)],
                             capture_output=True, text=True, check=False)
    site.create_topics()
    yield site
    site.stop()
    if mounted.returncode == 0:
        subprocess.run(["umount", str(blobs)], check=True)
    else:
        unavailable(f"cannot mount a tmpfs for the full-disk case (needs root): "
                    f"{mounted.stderr.strip()}")
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(site.logs())


def test_hostile_records_are_dead_lettered_and_every_partition_moves_on(hostile_site: Site):
    site, settings = hostile_site, hostile_site.settings
    stages = ["preprocess", "inference", "storage", "checker"]
    site.start(*stages)
    site.start("ingest")  # no camera: it idles instead of exiting
    write_hostile_records(settings)

    def letters() -> dict[tuple[str, str], DeadLetter]:
        if all(p.poll() is not None for p in site.procs["checker"]):
            site.start("checker")  # as the supervisor would: it dies on cam-crash-bad
        return {(d.camera_id or "", d.service): d for _, d in dead_letters(settings)}

    def checked() -> set[str]:
        return {Codec().decode(m.value(), InferenceResult).frame_id
                for m in read_topic(settings, settings.topic("detections.checked"))}

    goods = {f"{c.key}-good" for c in CASES if c.code}
    wanted = {(c.key, c.service) for c in CASES if c.code}
    wait_until(lambda: wanted <= set(letters()), 180, "a dead letter per hostile record")
    wait_until(lambda: goods <= set(stored(settings)), 120, "every good neighbour stored")
    on_detections = {f"{c.key}-good" for c in CASES if c.topic == "detections"}
    wait_until(lambda: on_detections <= checked(), 60, "the checker's good neighbours passed on")
    wait_until(lambda: all(s.lag == 0 for s in site_status(settings) if s.service in stages),
               60, "every partition consumed to its end")

    found, kept, passed = letters(), set(stored(settings)), checked()
    beats = {b.service: b for b in heartbeats(settings, Codec())}
    site.procs["checker"] = site.procs["checker"][-1:]  # the others died on purpose
    alive = {name: site.alive(name) for name in [*stages, "ingest"]}
    rows = []
    for case in CASES:
        if case.code is None:  # the forged heartbeat: status reads past it
            outcome = "ignored by status" if "forged" not in beats else "SHOWN BY STATUS"
            row = [case.name, case.topic, outcome, "-", "no", "-"]
        else:
            # what the stage that met it keeps: the checker passes results on, others store
            after = passed if case.service == "checker" else kept
            letter = found[(case.key, case.service)]
            row = [case.name, case.topic, f"dead-lettered by {letter.service}", letter.code,
                   "YES" if case.bad_id in after else "no",
                   "yes" if f"{case.key}-good" in after else "NO"]
        rows.append([site.kind, *row, "yes" if all(alive.values()) else
                     "NO: " + ",".join(n for n, up in alive.items() if not up)])
    rows.append([site.kind, *full_disk_case(site, settings), "yes" if all(
        site.alive(name) for name in [*stages, "ingest"]) else "NO"])
    HOSTILE_ROWS.extend(rows)
    print("\n" + hostile_table(rows))

    assert {c.name: found[(c.key, c.service)].code for c in CASES if c.code} == {
        c.name: c.code for c in CASES if c.code}
    assert [r for r in rows if r[5] not in ("no", "-") or r[6] == "NO" or r[7] != "yes"] == []
    assert rows[-1][3] in ("capture paused, then resumed", "NOT RUN: no tmpfs")
    assert "forged" not in beats
    assert beats["ingest"].state == "idle"


def full_disk_case(site: Site, settings: Settings) -> list[str]:
    """The blob store's disk fills up under a camera: capture pauses with a status problem,
    and resumes, its frames stored, once space is freed."""
    blobs = settings.resolved_blob_dir
    if not os.path.ismount(blobs):
        return ["full disk (tmpfs)", "blob dir", "NOT RUN: no tmpfs", "-", "-", "-"]
    filler = blobs / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:  # until ENOSPC
            out.write(b"\0" * 65536)
    site.start("ingest", extra_args=("--demo",))  # the demo cameras: frames over 1 KiB

    def problems() -> list[str]:
        return [f for b in heartbeats(settings, Codec()) if b.service == "ingest"
                for f in b.faults]

    wait_until(lambda: any(f.startswith("disk_full") for f in problems()), 60,
               "capture paused with a disk_full problem")
    paused = [f for f in problems() if f.startswith("disk_full")][0]
    demo = lambda: [f for f in stored(settings) if "-" not in f]  # noqa: E731 (ULIDs)
    filler.unlink()
    wait_until(lambda: not problems() and demo(), 120, "capture resumed and its frames stored")
    return ["full disk (tmpfs) under a camera", "blob dir",
            "capture paused, then resumed" if "free" in paused else f"PAUSED: {paused}",
            "-", "-", "yes"]


def write_hostile_records(settings: Settings) -> None:
    """Each case's hostile record, then a good record with the same key (same partition)."""
    import numpy as np

    from framewire.contracts import FramePreprocessed, ServiceHeartbeat
    from framewire.models.manifest import load_manifest
    from framewire.pixels.encoding import encode_jpeg
    from tests.fixtures.images import jpeg_claiming_size

    blobs = settings.resolved_blob_dir.resolve()
    fifo = blobs / "ab" / "ab" / f"{'ab' * 32}.bin"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # a stage that opened it would hang there
    model = load_manifest(settings.inference.model)
    w, h = model.input_width, model.input_height
    now = utcnow()

    def header(key: str, which: str, camera: str | None = None) -> FrameHeader:
        return FrameHeader(frame_id=f"{key}-{which}", camera_id=camera or key, seq=0,
                           captured_at=now, ingested_at=now)

    def raw(key: str, which: str, uri: str | None = None, camera: str | None = None,
            frame_id: str | None = None) -> FrameCaptured:
        head = header(key, which, camera)
        if frame_id is not None:
            head = replace(head, frame_id=frame_id)
        return FrameCaptured(header=replace(head, image_uri=uri), source="attacker",
                             content_type="image/jpeg", width=640, height=360,
                             image=None if uri else jpeg(synthetic_frame(1)))

    def ready(key: str, which: str, pixels: bytes) -> FramePreprocessed:
        return FramePreprocessed(
            header=header(key, which), preprocessed_at=now, orig_width=w, orig_height=h,
            input_width=w, input_height=h, scale=1.0, pad_x=0.0, pad_y=0.0,
            pixel_format="jpeg", brightness=100.0, sharpness=100.0, too_dark=False,
            blurred=False, frozen=False, pixels=pixels)

    def result(key: str, which: str, frame_id: str | None = None) -> InferenceResult:
        head = header(key, which)
        return InferenceResult(
            header=replace(head, frame_id=frame_id) if frame_id else head, preprocessed_at=now,
            inferred_at=now, orig_width=640, orig_height=480, model_name="m",
            model_version="1", provider="cpu", too_dark=False, blurred=False, frozen=False)

    codec = Codec()
    good_frame = raw("x", "good")
    encoded = codec.encode(good_frame)
    hostile: dict[str, bytes] = {
        "cam-etc": codec.encode(raw("cam-etc", "bad", "file:///etc/hostname")),
        "cam-zero": codec.encode(raw("cam-zero", "bad", "file:///dev/zero")),
        "cam-fifo": codec.encode(raw("cam-fifo", "bad", fifo.as_uri())),
        "cam-dotdot": codec.encode(raw("cam-dotdot", "bad",
                                       f"{blobs.as_uri()}/../../../etc/{'cd' * 32}.bin")),
        "cam-badid": codec.encode(raw("cam-badid", "bad", frame_id=BAD_IDS["cam-badid"])),
        "cam-key": codec.encode(raw("cam-key", "bad", camera="cam-someone-else")),
        "cam-fp": MAGIC + bytes.fromhex("0123456789abcdef") + encoded[10:],
        "cam-trunc": codec.encode(raw("cam-trunc", "bad"))[:40],
        "cam-bomb": codec.encode(ready("cam-bomb", "bad", jpeg_claiming_size(32768, 32768))),
        "cam-longid": codec.encode(result("cam-longid", "bad", frame_id=BAD_IDS["cam-longid"])),
        "cam-crash": codec.encode(result("cam-crash", "bad")),
        "cam-poison": codec.encode(result("cam-poison", "bad")),
    }
    good = {"frames.raw": lambda k: raw(k, "good"),
            "frames.ready": lambda k: ready(k, "good", encode_jpeg(np.zeros((h, w, 3), np.uint8))),
            "detections": lambda k: result(k, "good")}
    forged = ServiceHeartbeat(service="forged", instance="x:1", host="x", pid=-5,
                              version="0", sent_at=now, state="running",
                              partitions=["x:notanumber"], records_in=-1, records_out=0,
                              dead_lettered=0, produced_offsets={"x:y": 1})
    pub = Publisher(settings, "attacker")
    try:
        for case in CASES:
            topic = settings.topic(case.topic)
            if case.code is None:
                pub.produce_raw(topic, codec.encode(forged), b"forged", None)
                pub.produce_raw(topic, b"\xc3\x01garbage", b"forged", None)
                continue
            pub.produce_raw(topic, hostile[case.key], case.key.encode(), None)
            pub.publish(case.topic, good[case.topic](case.key), key=case.key)
        pub.flush(30)
    finally:
        pub.close()


def test_a_database_gone_read_only_pauses_storage_and_dead_letters_nothing(
        site: Site, postgres_db_url: str):
    """A systemic fault: every record would fail, so none is dead-lettered; storage pauses,
    says why in status, and stores everything once the database is writable again."""
    import psycopg
    import sqlalchemy as sa

    from framewire.contracts import FrameHeader as Header

    site.env["FRAMEWIRE_DATABASE_URL"] = postgres_db_url
    settings = site.settings
    url = sa.make_url(postgres_db_url)
    admin = {"host": url.host, "port": url.port, "user": url.username, "dbname": "postgres",
             "autocommit": True}

    def read_only(on: bool) -> None:
        change = "SET default_transaction_read_only = on" if on else \
            "RESET default_transaction_read_only"
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f"ALTER DATABASE {url.database} {change}")
            # storage's open connections keep the old setting: end them, it reconnects
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (url.database,))

    def send(*frame_ids: str) -> None:
        now = utcnow()
        pub = Publisher(settings, "test")
        try:
            for frame_id in frame_ids:
                pub.publish("detections", InferenceResult(
                    header=Header(frame_id=frame_id, camera_id="cam-db", seq=0,
                                  captured_at=now, ingested_at=now),
                    preprocessed_at=now, inferred_at=now, orig_width=640, orig_height=480,
                    model_name="m", model_version="1", provider="cpu", too_dark=False,
                    blurred=False, frozen=False), key="cam-db")
            pub.flush(30)
        finally:
            pub.close()

    def storage() -> list[Any]:
        return [b for b in heartbeats(settings, Codec()) if b.service == "storage"]

    site.start("storage")
    send("r-1", "r-2")
    wait_until(lambda: stored(settings) == ["r-1", "r-2"], 60, "the first results stored")
    read_only(True)
    try:
        send("r-3", "r-4", "r-5")
        wait_until(lambda: any(b.state == "paused" and any(
            f.startswith("systemic_fault") and "read-only" in f for f in b.faults)
            for b in storage()), 60, "storage paused with a systemic_fault naming read-only")
        fault = next(f for b in storage() for f in b.faults)
    finally:
        read_only(False)
    wait_until(lambda: stored(settings) == ["r-1", "r-2", "r-3", "r-4", "r-5"], 60,
               "every result stored once the database is writable")
    wait_until(lambda: all(not b.faults and b.state == "running" for b in storage()), 30,
               "the fault cleared")
    assert dead_letters(settings) == []
    assert site.alive("storage")
    HOSTILE_ROWS.append([site.kind, "database gone read-only (systemic)", "detections",
                         "storage paused, then resumed", "-", "-", "yes", "yes"])
    print(fault)
