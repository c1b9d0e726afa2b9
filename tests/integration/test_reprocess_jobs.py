"""Reprocess jobs on the session's Apache Kafka, with real preprocess, inference, storage and
gateway processes: after a model switch, `POST /api/v1/reprocess` re-runs one camera's range
and its progress reaches every replayed frame stored once, from the new model."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from framewire.store.db import open_database
from tests.fixtures.gateway import RunningGateway, running_gateway
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_model_switch import manifest, settled_on
from tests.integration.test_pipeline import STAGES, publish

pytestmark = pytest.mark.integration
API = "/api/v1"
NEW_VERSION = "3.0-reprocess-test"


def rows(site: Site) -> list[tuple[str, str, str]]:
    """(camera, frame id, model version) of every stored result."""
    with open_database(site.settings.resolved_database_url) as db:
        return [(r.camera_id, r.frame_id, r.model_version)
                for r in db.query_results(limit=10_000)]


def test_a_reprocess_job_replays_one_camera_and_counts_its_frames_stored_from_the_new_model(
        kafka_site: Site, tmp_path: Path):
    site = kafka_site
    site.start(*STAGES)  # they start while the gateway's token is made
    with running_gateway(site) as gateway:
        reprocess_one_camera(site, gateway, tmp_path)


def reprocess_one_camera(site: Site, gw: RunningGateway, tmp_path: Path) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    publish(site, [(camera, jpeg(synthetic_frame(i, c))) for i in range(4)
                   for c, camera in enumerate(("cam-1", "cam-2"))])
    after = datetime.now(UTC) + timedelta(seconds=1)
    wait_until(lambda: len(rows(site)) >= 8, 90, "8 stored results")
    (old_version,) = {v for _, _, v in rows(site)}

    # a new model version: the stored rows stay as they were until their frames run again
    small = manifest(tmp_path, "centerface-next", NEW_VERSION, 320, 192)
    with gw.client("admin") as client:
        assert client.post(f"{API}/model", json={"model": str(small)}).status_code == 202
    wait_until(lambda: settled_on(gw, "centerface-next", NEW_VERSION), 60,
               "every process to run the new model")

    with gw.client("operator") as client:
        bad = [client.post(f"{API}/reprocess", json=body) for body in (
            {"camera": "cam-1", "since": after.isoformat(), "until": before.isoformat()},
            {"camera": "cam 1!", "since": "1h"},
            {"camera": "cam-1", "since": "yesterday-ish"})]
        started = client.post(f"{API}/reprocess", json={
            "camera": "cam-1", "since": before.isoformat(), "until": after.isoformat()})
    assert [b.status_code for b in bad] == [422, 422, 422], [b.text for b in bad]
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]

    def done() -> dict[str, Any] | None:
        with gw.client("viewer") as client:
            job = client.get(f"{API}/reprocess/{job_id}").json()
        assert job["state"] in ("queued", "running", "done"), job
        return job if job["state"] == "done" and job["results_stored"] == 4 else None

    job = wait_until(done, 90, "the job to finish and its 4 frames to be stored again")
    assert (job["camera"], job["records_found"], job["records_replayed"], job["error"]) == (
        "cam-1", 4, 4, None)
    assert (job["model_name"], job["model_version"]) == ("centerface-next", NEW_VERSION)
    assert job["started_at"] <= job["finished_at"] and job["replay_id"]
    with gw.client("viewer") as client:
        listed = client.get(f"{API}/reprocess").json()
        missing = client.get(f"{API}/reprocess/no-such-job")
    assert [j["job_id"] for j in listed] == [job_id] and missing.status_code == 404

    stored = rows(site)
    assert len(stored) == len({f for _, f, _ in stored}) == 8  # replaced in place: no duplicate
    assert {v for c, _, v in stored if c == "cam-1"} == {NEW_VERSION}
    assert {v for c, _, v in stored if c == "cam-2"} == {old_version}  # not reprocessed
    # the job's state survives the gateway (its own file, 0600); the start is audited
    (path,) = (site.home / "state" / "reprocess").glob("*.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["state"] == "done"
    audit = [json.loads(line) for line in
             (site.home / "logs" / "audit.log").read_text().splitlines()]
    assert [e["job_id"] for e in audit if e["action"] == "reprocess.start"] == [job_id]
    assert all(site.alive(s) for s in (*STAGES, "gateway"))
