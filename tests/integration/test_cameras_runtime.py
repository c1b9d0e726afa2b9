"""Cameras changed while ingest runs: `framewire cameras add|rm|ls` against a real ingest
process on the embedded broker, and the compacted topic on Apache Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from framewire.broker.cluster import KafkaCluster
from framewire.broker.reading import read_topic
from framewire.capture.cameras import CameraWatch
from framewire.contracts import FrameCaptured
from framewire.contracts.codec import Codec
from framewire.ops.cameras import add_camera, list_cameras, remove_camera
from framewire.ops.status import heartbeats
from tests.fixtures.images import synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_kafka_security import as_principal, denials

pytestmark = pytest.mark.integration


def cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framewire.cli", "cameras", *args],
                          env={**os.environ, **site.env}, capture_output=True, text=True,
                          timeout=60, check=False)


def folder_of_frames(path: Path, camera: int, count: int = 4) -> Path:
    path.mkdir()
    for i in range(count):
        cv2.imwrite(str(path / f"{i:03d}.jpg"), synthetic_frame(i, camera, 160, 120))
    return path


def frames_by_camera(site: Site) -> dict[str, list[FrameCaptured]]:
    codec, out = Codec(), {}
    for msg in read_topic(site.settings, site.settings.topic("frames.raw")):
        frame = codec.decode(msg.value(), FrameCaptured)
        out.setdefault(frame.camera_id, []).append(frame)
    return out


def running_cameras(site: Site) -> list[str] | None:
    """The cameras the ingest process reads, from its latest heartbeat."""
    beats = [b for b in heartbeats(site.settings, Codec()) if b.service == "ingest"]
    return sorted(beats[-1].partitions) if beats else None


def test_cameras_added_changed_and_removed_with_the_cli_while_ingest_runs(
        site: Site, tmp_path: Path):
    first = folder_of_frames(tmp_path / "first", 1)
    second = folder_of_frames(tmp_path / "second", 2)
    yaml = folder_of_frames(tmp_path / "yaml", 3)
    site.env["FRAMEWIRE_CAMERAS"] = json.dumps(
        [{"camera_id": "yaml-cam", "url": str(yaml), "fps": 8, "loop": True}])
    site.start("ingest")
    wait_until(lambda: running_cameras(site) == ["yaml-cam"], 30, "ingest reading yaml-cam")

    added = cli(site, "add", "cam-new", "--url", str(first), "--fps", "8", "--loop", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"created": True, "camera": {
        "camera_id": "cam-new", "url": str(first), "fps": 8.0, "loop": True, "retention": None,
        "origin": "topic"} | {k: v for k, v in json.loads(added.stdout)["camera"].items()
                              if k not in {"camera_id", "url", "fps", "loop", "retention",
                                           "origin"}}}
    wait_until(lambda: len(frames_by_camera(site).get("cam-new", [])) >= 3, 30,
               "cam-new's frames on frames.raw")

    listed = cli(site, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(c["camera_id"], c["origin"]) for c in json.loads(listed.stdout)] == [
        ("cam-new", "topic"), ("yaml-cam", "config")]

    # changed: it restarts reading its new folder, out of privacy mode
    changed = cli(site, "add", "cam-new", "--url", str(second), "--fps", "8", "--loop",
                  "--no-privacy-mode", "--json")
    assert changed.returncode == 0 and json.loads(changed.stdout)["created"] is False
    assert json.loads(changed.stdout)["camera"]["privacy_mode"] is False
    wait_until(lambda: any(f.source.startswith(str(second))
                           for f in frames_by_camera(site).get("cam-new", [])), 30,
               "cam-new's frames from its new folder")
    # each frame carries the privacy mode its camera had when it was captured
    assert {(f.source.startswith(str(second)), f.privacy)
            for f in frames_by_camera(site)["cam-new"]} == {(False, True), (True, False)}

    removed = cli(site, "rm", "cam-new", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["removed"]["camera_id"] == "cam-new"
    wait_until(lambda: running_cameras(site) == ["yaml-cam"], 30, "cam-new stopped")

    def yaml_frames() -> int:
        return len(frames_by_camera(site).get("yaml-cam", []))

    # frames it had captured before its stop are still sent, with the next passes of the
    # send loop; after that its count must stay where it is while yaml-cam goes on
    mark = yaml_frames()
    wait_until(lambda: yaml_frames() >= mark + 8, 30, "yaml-cam going on")
    stopped_at = len(frames_by_camera(site)["cam-new"])
    mark = yaml_frames()
    wait_until(lambda: yaml_frames() >= mark + 8, 30, "yaml-cam going on")
    assert len(frames_by_camera(site)["cam-new"]) == stopped_at

    # a camera of the settings is hidden by its tombstone
    assert cli(site, "rm", "yaml-cam").returncode == 0
    wait_until(lambda: running_cameras(site) == [], 30, "yaml-cam stopped")
    assert json.loads(cli(site, "ls", "--json").stdout) == []
    unknown = cli(site, "rm", "cam-new")
    assert unknown.returncode == 1 and "no camera 'cam-new'" in unknown.stderr
    assert site.alive("ingest")


def test_the_cameras_topic_on_apache_kafka_is_compacted_and_keeps_the_latest_per_camera(
        kafka_site: Site):
    settings = kafka_site.settings
    assert add_camera(settings, {"camera_id": "k-1", "url": "rtsp://u:pw@10.0.0.9/s"}).created
    assert not add_camera(settings, {"camera_id": "k-1", "url": "/srv/k1", "fps": 2}).created
    add_camera(settings, {"camera_id": "k-2", "url": "/srv/k2"})
    remove_camera(settings, "k-2")
    assert [(c.settings.camera_id, c.settings.url, c.settings.fps)
            for c in list_cameras(settings)] == [("k-1", "/srv/k1", 2.0)]
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    resource = ConfigResource(ResourceType.TOPIC, settings.topic("cameras"))
    configs = {k: v.value for k, v in admin.describe_configs([resource])[resource]
               .result(10).items()}
    assert configs["cleanup.policy"] == "compact"
    assert configs["delete.retention.ms"] == str(2**63 - 1)


def test_ingest_principal_reads_the_cameras_topic_under_its_acls(
        secure_kafka: KafkaCluster, secure_site: Site):
    add_camera(secure_site.settings, {"camera_id": "tls-1", "url": "rtsp://u:pw@10.0.0.7/s"})
    watch = CameraWatch(as_principal(secure_site, "ingest"))
    try:
        assert list(watch.start()) == ["tls-1"]
    finally:
        watch.close()
    assert denials(secure_kafka, secure_site) == set()
