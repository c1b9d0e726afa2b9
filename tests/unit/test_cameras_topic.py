"""The cameras settings topic, read without a broker: latest record per key, tombstones, the
configured cameras under it, and what changes for a running ingest."""

from __future__ import annotations

import json

import pytest

from framewire.broker.client import topic_plans
from framewire.capture.cameras import (
    camera_value,
    check_camera_url,
    diff_cameras,
    effective_cameras,
    latest_per_key,
    parse_camera,
)
from framewire.config import CameraSettings, load_settings
from framewire.contracts import FrameCaptured
from framewire.errors import ConfigError
from framewire.ops.cameras import SiteCamera, validated_camera
from framewire.topology import Output, StageSpec, topology
from framewire.topology.registry import check


def cam(camera_id: str, url: str = "/data/shots", **kw) -> CameraSettings:
    return CameraSettings(camera_id=camera_id, url=url, **kw)


def rec(camera: CameraSettings) -> tuple[bytes, bytes]:
    return camera.camera_id.encode(), camera_value(camera)


def test_the_latest_record_per_camera_wins_and_a_tombstone_removes_it():
    records = [rec(cam("a", fps=1)), rec(cam("b")), rec(cam("a", fps=5)), (b"b", None),
               rec(cam("c"))]
    table = latest_per_key(records)
    assert table == {"a": cam("a", fps=5), "b": None, "c": cam("c")}
    assert effective_cameras([], table) == {"a": cam("a", fps=5), "c": cam("c")}


def test_a_camera_added_again_after_its_tombstone_is_back():
    table = latest_per_key([rec(cam("a")), (b"a", None), rec(cam("a", loop=True))])
    assert table == {"a": cam("a", loop=True)}


def test_folding_more_records_into_a_table_equals_folding_them_all_at_once():
    first, later = [rec(cam("a")), rec(cam("b"))], [(b"a", None), rec(cam("b", fps=2))]
    assert latest_per_key(later, latest_per_key(first)) == latest_per_key(first + later)


def test_topic_entries_add_to_override_and_hide_the_configured_cameras():
    configured = [cam("yaml-1", "rtsp://cam1/s"), cam("yaml-2"), cam("yaml-3")]
    table = {"yaml-1": cam("yaml-1", "rtsp://cam1/other"), "yaml-2": None, "new": cam("new")}
    assert effective_cameras(configured, table) == {
        "yaml-1": cam("yaml-1", "rtsp://cam1/other"), "yaml-3": cam("yaml-3"),
        "new": cam("new")}


@pytest.mark.parametrize(("key", "value", "message"), [
    (b"a", b"{not json", "not valid camera settings"),
    (b"a", json.dumps({"camera_id": "a"}).encode(), "url"),
    (b"a", json.dumps({"camera_id": "a", "url": "/x", "fps": 0}).encode(), "fps"),
    (b"a", camera_value(cam("b")), "keyed 'a' holds camera 'b'"),
    (None, camera_value(cam("a")), "without a key"),
])
def test_a_record_that_is_not_a_camera_under_its_id_is_refused(key, value, message):
    with pytest.raises(ValueError, match=message):
        parse_camera(key, value)


def test_a_bad_record_is_skipped_and_the_camera_keeps_its_earlier_settings(caplog):
    table = latest_per_key([rec(cam("a", fps=3)), (b"a", b"garbage"), rec(cam("b"))])
    assert table == {"a": cam("a", fps=3), "b": cam("b")}
    assert "bad record on the cameras topic skipped" in caplog.text


def test_the_changes_between_two_sets_say_what_to_start_restart_and_stop():
    before = {"a": cam("a"), "b": cam("b"), "c": cam("c")}
    after = {"a": cam("a"), "b": cam("b", fps=2), "d": cam("d")}
    changes = diff_cameras(before, after)
    assert (changes.added, changes.changed, changes.removed) == ([cam("d")], [cam("b", fps=2)],
                                                                 ["c"])
    assert not diff_cameras(after, dict(after))


@pytest.mark.parametrize("url", ["/srv/shots", "rtsp://u:p@10.0.0.1/s", "https://cam/snap.jpg",
                                 "clip.mp4"])
def test_paths_and_camera_urls_are_accepted(url):
    check_camera_url(url)


def test_a_camera_with_an_unknown_scheme_or_bad_fields_fails_saying_what_to_fix():
    with pytest.raises(ConfigError, match=r"unknown scheme 'ftp'.*rtsp://"):
        validated_camera({"camera_id": "a", "url": "ftp://u:secret@host/x"})
    with pytest.raises(ConfigError) as bad:
        validated_camera({"camera_id": "bad id!", "url": "/x", "fps": 999})
    assert "camera_id" in str(bad.value) and "fps" in str(bad.value)


def test_a_listed_camera_shows_its_url_masked():
    shown = SiteCamera(cam("a", "rtsp://admin:hunter2@10.0.0.1/s?token=t0k"), "topic").as_json()
    assert shown == {"camera_id": "a", "url": "rtsp://admin:***@10.0.0.1/s?token=***",
                     "fps": None, "loop": False, "retention": None, "origin": "topic"} | {
        k: v for k, v in shown.items() if k not in
        {"camera_id", "url", "fps", "loop", "retention", "origin"}}
    assert "hunter2" not in json.dumps(shown) and "t0k" not in json.dumps(shown)


def test_the_cameras_topic_is_one_compacted_partition_that_keeps_its_tombstones():
    site = topology()
    info = site.topic("cameras")
    assert info.compacted and info.single_partition
    assert info.readers == ("gateway", "ingest", "storage")
    kafka = load_settings(broker="kafka", embedded_broker=True, broker_nodes=3, topic_prefix="p.")
    (plan,) = [p for p in topic_plans(kafka, 3) if p.name == "p.cameras"]
    assert plan.partitions == 1
    assert plan.configs["cleanup.policy"] == "compact"
    assert int(plan.configs["delete.retention.ms"]) == 2**63 - 1
    tansu = load_settings(topic_prefix="p.")
    (plan,) = [p for p in topic_plans(tansu, 1) if p.name == "p.cameras"]
    assert plan.configs["cleanup.policy"] == "compact"
    assert all("cleanup.policy" not in p.configs for p in topic_plans(kafka, 3)
               if p.name not in ("p.cameras", "p.control"))


@pytest.mark.parametrize(("args", "wanted"), [
    (["--url", "ftp://user:s3cret@host/x"], "unknown scheme 'ftp'"),
    (["--url", "/srv/x", "--fps", "0"], "fps: Input should be greater than 0"),
])
def test_cameras_add_refuses_a_bad_camera_before_reaching_the_broker(args, wanted):
    from typer.testing import CliRunner

    from framewire.cli import app

    # no broker listens here: a camera refused must be refused before any Kafka call
    shown = CliRunner().invoke(app, ["cameras", "add", "cam-x", *args],
                               env={"FRAMEWIRE_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert isinstance(shown.exception, ConfigError), shown.output
    assert wanted in str(shown.exception) and "s3cret" not in str(shown.exception)


def test_a_stage_may_follow_or_manage_only_a_settings_topic():
    source = StageSpec(name="src", summary="s", entry="x:src",
                       outputs=(Output("frames.raw", FrameCaptured),), follows=("cameras",))
    api = StageSpec(name="api", summary="a", entry="x:api", manages=("cameras",))
    info = check([source, api]).topic("cameras")
    assert (info.writers, info.readers) == (("api",), ("src",))
    with pytest.raises(ConfigError, match="manages 'frames.raw', which is not a settings topic"):
        check([source, StageSpec(name="bad", summary="b", entry="x:b",
                                 manages=("frames.raw",))])
