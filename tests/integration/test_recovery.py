"""Disaster recovery from the log on the session's 3-node Apache Kafka, with counts:
``framewire replay`` after a model change and ``framewire rebuild-db``; and on the embedded
broker, what both cannot do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest

from framewire.broker.reading import read_topic
from framewire.contracts import InferenceResult
from framewire.contracts.codec import Codec
from framewire.ops.logreplay import REPLAY_HEADER
from framewire.store.db import open_database
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_pipeline import STAGES, publish, stored_count

pytestmark = pytest.mark.integration
PER_CAMERA = 6
CAMERAS = ("cam-1", "cam-2")
N = PER_CAMERA * len(CAMERAS)
NEW_VERSION = "2.0-replay-test"


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framewire.cli", *args],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def report(out: subprocess.CompletedProcess[str]) -> dict:
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def versions(url: str) -> dict[str, dict[str, str]]:
    """camera → frame id → model version of every stored result."""
    db = open_database(url)
    try:
        rows = db.query_results(limit=10_000)
    finally:
        db.close()
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        found.setdefault(row.camera_id, {})[row.frame_id] = row.model_version
    return found


def publish_frames(site: Site) -> None:
    publish(site, [(camera, jpeg(synthetic_frame(i, c)))
                   for i in range(PER_CAMERA) for c, camera in enumerate(CAMERAS)])


def stop_service(site: Site, name: str) -> None:
    """Stop every process of one service (it finishes its batch and commits) and forget it."""
    procs = site.procs.pop(name, [])
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(60)


def manifest_with_version(folder: Path, version: str) -> Path:
    """The built-in CenterFace manifest as a file of its own, naming another version: a model
    change as an operator makes one (FRAMEWIRE_INFERENCE__MODEL=path)."""
    builtin = resources.files("framewire.models").joinpath("centerface.yaml")
    path = folder / "centerface-next.yaml"
    path.write_text(builtin.read_text() + f"\nversion: {version}\n")
    return path


def test_replay_after_a_model_change_gives_one_camera_the_new_version_without_new_rows(
        kafka_site: Site, tmp_path: Path):
    site = kafka_site
    url = site.settings.resolved_database_url
    site.start(*STAGES)
    before = datetime.now(UTC) - timedelta(seconds=1)
    publish_frames(site)
    after = datetime.now(UTC) + timedelta(seconds=1)
    wait_until(lambda: stored_count(site) >= N, 150, f"{N} stored results")
    first = versions(url)
    assert sorted(first) == list(CAMERAS)
    assert all(len(first[c]) == PER_CAMERA for c in CAMERAS)
    (old_version,) = {v for rows in first.values() for v in rows.values()}
    assert old_version != NEW_VERSION

    # the model changes: inference restarts with a manifest naming a new version
    stop_service(site, "inference")
    site.env["FRAMEWIRE_INFERENCE__MODEL"] = str(manifest_with_version(tmp_path, NEW_VERSION))
    site.start("inference")

    out = cli(site.env, "replay", "--topic", "frames.raw", "--since", before.isoformat(),
              "--until", after.replace(tzinfo=None).isoformat(), "--camera", "cam-1", "--json")
    replayed = report(out)
    print(f"replay counts: {replayed}")
    assert (replayed["records_read"], replayed["republished"], replayed["skipped_by_camera"],
            replayed["skipped_outside_range"]) == (N, PER_CAMERA, N - PER_CAMERA, 0)
    assert "republished" in out.stderr  # the human summary goes to stderr

    wait_until(lambda: set(versions(url)["cam-1"].values()) == {NEW_VERSION}, 120,
               "cam-1's rows to carry the new model version")
    now = versions(url)
    assert now["cam-2"] == first["cam-2"]  # not replayed: the old version
    assert set(now["cam-1"]) == set(first["cam-1"])  # the same frames, replaced in place
    assert stored_count(site) == N
    # the replayed records carry the replay's mark through to their results
    codec, marked = Codec(), {}
    for msg in read_topic(site.settings, site.settings.topic("detections")):
        headers = dict(msg.headers() or [])
        if REPLAY_HEADER in headers:
            result = codec.decode(msg.value(), InferenceResult)
            marked[result.frame_id] = (result.camera_id, result.model_version,
                                       headers[REPLAY_HEADER].decode())
    assert marked == {frame_id: ("cam-1", NEW_VERSION, replayed["replay_id"])
                      for frame_id in first["cam-1"]}
    assert all(site.alive(s) for s in STAGES)


def test_rebuild_db_fills_an_empty_database_with_the_same_frames_and_refuses_a_full_one(
        kafka_site: Site, tmp_path: Path):
    site = kafka_site
    site.start(*STAGES)
    publish_frames(site)
    wait_until(lambda: stored_count(site) >= N, 150, f"{N} stored results")
    original = versions(site.settings.resolved_database_url)
    in_topic = len(read_topic(site.settings, site.settings.topic("detections")))
    assert in_topic >= N  # a redelivered result may add a copy; storage keeps one row

    fresh = f"sqlite:///{tmp_path / 'rebuilt' / 'results.db'}"
    env = {**site.env, "FRAMEWIRE_DATABASE_URL": fresh}
    rebuilt = report(cli(env, "rebuild-db", "--json"))
    print(f"rebuild counts: {rebuilt}")
    assert (rebuilt["records_read"], rebuilt["rows_written"], rebuilt["rows_replaced"],
            rebuilt["undecodable"]) == (in_topic, N, 0, 0)
    assert rebuilt["duplicates_skipped"] == in_topic - N
    assert versions(fresh) == original  # the same frame ids, cameras and model versions

    again = cli(env, "rebuild-db", "--json")
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"already holds {N} results" in " ".join(again.stderr.split())

    forced = report(cli(env, "rebuild-db", "--force", "--json"))
    print(f"rebuild --force counts: {forced}")
    assert (forced["records_read"], forced["rows_written"], forced["duplicates_skipped"]) == (
        in_topic, 0, in_topic)
    assert versions(fresh) == original


@pytest.mark.parametrize(("args", "cannot"), [
    (("replay", "--topic", "frames.raw", "--since", "1h", "--camera", "cam-1"),
     "framewire replay cannot re-run a time range on the embedded broker"),
    (("rebuild-db",), "framewire rebuild-db cannot rebuild the results tables on the "
                      "embedded broker"),
])
def test_on_the_embedded_broker_replay_and_rebuild_exit_2_saying_what_they_cannot_do(
        site: Site, args: tuple[str, ...], cannot: str):
    out = cli(site.env, *args)
    text = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stdout + out.stderr
    assert cannot in text
    assert "memory only" in text and "framewire run --broker kafka" in text
    assert stored_count(site) == 0  # nothing was written anywhere
