"""Status, lag, graceful shutdown and the CLI commands, against a real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import cv2
import pytest

from framewire.ops.status import site_status
from framewire.store.db import open_database
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_pipeline import STAGES, publish, stored_count

pytestmark = pytest.mark.integration


def cli(site: Site, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framewire.cli", *args], env={
        **os.environ, **site.env}, capture_output=True, text=True, timeout=timeout, check=False)


def service_status(site: Site, name: str):
    return next(s for s in site_status(site.settings) if s.service == name)


def test_storage_lag_counts_every_unstored_result_although_the_broker_underreports_ends(
        site: Site):
    site.start("preprocess", "inference")
    publish(site, [("cam-lag", jpeg(synthetic_frame(i))) for i in range(30)])
    wait_until(lambda: service_status(site, "inference").total("records_out") == 30, 120,
               "inference to produce 30 results")
    # no storage yet: every produced result is lag, whatever the broker's watermark says
    wait_until(lambda: service_status(site, "storage").lag == 30, 30, "storage lag of 30")
    site.start("storage")
    wait_until(lambda: service_status(site, "storage").lag == 0, 120, "storage lag back to 0")
    assert stored_count(site) == 30


def test_sigterm_finishes_the_batch_commits_and_exits_cleanly(site: Site):
    site.start(*STAGES)
    publish(site, [("cam-term", jpeg(synthetic_frame(i))) for i in range(10)])
    wait_until(lambda: stored_count(site) == 10, 120, "10 stored")
    wait_until(lambda: service_status(site, "storage").lag == 0, 30, "storage lag 0")
    for name in STAGES:
        for proc in site.procs[name]:
            proc.send_signal(signal.SIGTERM)
    codes = [p.wait(30) for name in STAGES for p in site.procs[name]]
    assert codes == [0, 0, 0]
    assert "stage stopped" in site.logs()
    # the groups committed everything they consumed: nothing is redelivered
    assert all(service_status(site, n).lag == 0 for n in STAGES)


# the keys of each process in `framewire status --json`, documented in docs/operations.md
INSTANCE_KEYS = {
    "instance", "pid", "host", "state", "version", "partitions", "seconds_since_heartbeat",
    "records_in", "records_out", "dead_lettered", "dropped", "drop_reasons", "faults",
    "restarts", "broker_ok", "stalled_cameras", "last_commit_at", "metrics_port",
    "cpu_s_per_1000_frames", "out_per_s", "host_watts", "gpu_watts", "model_name",
    "model_version"}


def test_status_command_lists_each_service_with_pid_and_partitions(site: Site):
    site.start(*STAGES)
    wait_until(lambda: all(service_status(site, n).alive
                           and sum(len(b.partitions) for b in service_status(site, n).alive) == 4
                           for n in STAGES), 60, "every stage to own its 4 partitions")
    out = cli(site, "status", "--json")
    assert out.returncode == 0, out.stderr
    by = {s["service"]: s for s in json.loads(out.stdout)}
    for name in STAGES:
        assert by[name]["alive"] is True
        (instance,) = by[name]["instances"]
        assert instance["pid"] == site.procs[name][0].pid
        assert set(instance) == INSTANCE_KEYS  # as docs/operations.md lists them
        assert instance["faults"] == [] and instance["state"] == "running"
        assert len(instance["partitions"]) == 4
        # the model each process runs: inference's, and the one preprocess letterboxes for
        assert instance["model_name"] == (None if name == "storage" else "centerface")
    assert by["ingest"]["alive"] is False


def test_publish_command_sends_a_folder_and_results_lists_them(site: Site, tmp_path):
    site.start(*STAGES)
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), synthetic_frame(i))
    out = cli(site, "publish", "--camera", "cam-7", "--path", str(folder))
    assert out.returncode == 0, out.stderr
    assert "published 5 frames" in out.stderr
    wait_until(lambda: stored_count(site) == 5, 120, "5 stored")
    res = cli(site, "results", "--camera", "cam-7", "--json")
    rows = json.loads(res.stdout)
    assert sorted(r["seq"] for r in rows) == [0, 1, 2, 3, 4]
    assert all(r["model_name"] == "centerface" for r in rows)


def test_deadletters_command_shows_the_reason_and_where_it_came_from(site: Site, tmp_path):
    site.start("preprocess")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    bomb = tmp_path / "bomb.jpg"
    from tests.fixtures.images import jpeg_claiming_size

    bomb.write_bytes(jpeg_claiming_size(60000, 60000))
    assert cli(site, "publish", "--camera", "cam-bad", "--path", str(notes)).returncode == 0
    assert cli(site, "publish", "--camera", "cam-bad", "--path", str(bomb)).returncode == 0

    def letters():
        out = cli(site, "deadletters", "--json")
        return json.loads(out.stdout) if out.returncode == 0 else []

    rows = wait_until(lambda: len(letters()) == 2 and letters(), 60, "2 dead letters")
    by_code = {r["code"]: r for r in rows}
    assert by_code["not_an_image"]["service"] == "ingest"
    assert by_code["too_many_pixels"]["service"] == "preprocess"
    assert by_code["too_many_pixels"]["source_topic"] == site.settings.topic("frames.raw")
    assert by_code["too_many_pixels"]["source_offset"] is not None
    assert "60000" in by_code["too_many_pixels"]["reason"]
    db = open_database(site.settings.resolved_database_url)
    assert db.count_results() == 0
    db.close()


def test_a_bad_config_fails_at_start_with_what_to_fix(site: Site):
    out = subprocess.run([sys.executable, "-m", "framewire.cli", "service", "storage"],
                         env={**os.environ, **site.env, "FRAMEWIRE_STORAGE__BATCH_SIZE": "-3"},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "storage.batch_size" in out.stderr
    assert "FRAMEWIRE_STORAGE__BATCH_SIZE" in out.stderr


def test_status_shows_each_stage_cpu_cost_per_1000_frames_and_its_rate(site: Site):
    site.start(*STAGES)
    publish(site, [("cam-cost", jpeg(synthetic_frame(i))) for i in range(6)])
    wait_until(lambda: stored_count(site) == 6, 120, "6 stored")

    def costs():
        out = cli(site, "status", "--json")
        assert out.returncode == 0, out.stderr
        services = json.loads(out.stdout)
        # every entry, the broker's too, has the cost keys; broker instances are nodes
        assert all("cpu_s_per_1000_frames" in s for s in services)
        services = [s for s in services if s["service"] != "broker"]
        found = {s["service"]: s["cpu_s_per_1000_frames"] for s in services}
        rates = {s["service"]: [b["out_per_s"] for b in s["instances"]] for s in services}
        ready = all(found[n] is not None and any(r for r in rates[n]) for n in STAGES)
        # energy figures are there, null where this machine exposes no RAPL or NVML
        assert all("host_joules_per_1000_frames" in s for s in services)
        return found if ready else None

    found = wait_until(costs, 60, "a cost in every stage's heartbeat")
    # decoding and running the model costs CPU: more than nothing, less than a core-second
    # per frame on any machine that runs this suite
    assert all(0 < found[n] < 1000 for n in STAGES)
    assert found["inference"] > found["storage"]
