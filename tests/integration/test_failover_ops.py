"""Operating through failures: replaying dead letters, loud stalls, restarts in status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from framewire.broker.reading import LagProbe
from framewire.capture.ingest import Ingest
from framewire.ops.status import dead_letters, site_status
from framewire.ops.supervisor import Supervisor
from framewire.runtime import StopSignal
from framewire.store.db import open_database
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_pipeline import STAGES, publish, stored_count

pytestmark = pytest.mark.integration


def cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framewire.cli", *args],
                          env={**os.environ, **site.env}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_replayed_dead_letters_are_stored_once_with_their_frame_ids(site: Site):
    # a too-strict pixel limit dead-letters every frame at preprocess ...
    site.env["FRAMEWIRE_MAX_PIXELS"] = "1000"
    site.start("preprocess")
    publish(site, [("cam-rp", jpeg(synthetic_frame(i))) for i in range(4)])
    wait_until(lambda: len(dead_letters(site.settings)) == 4, 60, "4 dead letters")
    frame_ids = sorted(d.frame_id for _, d in dead_letters(site.settings))
    site.stop()
    # ... the operator fixes the limit, restarts, and replays
    site.procs.clear()
    del site.env["FRAMEWIRE_MAX_PIXELS"]
    site.start(*STAGES)
    out = cli(site, "deadletters", "replay", "--reason", "too_many_pixels")
    assert out.returncode == 0, out.stderr
    assert "4 replayed to" in out.stderr
    wait_until(lambda: stored_count(site) == 4, 120, "4 replayed frames stored")
    db = open_database(site.settings.resolved_database_url)
    assert sorted(db.frame_ids()) == frame_ids
    # replaying again never makes a second row
    assert cli(site, "deadletters", "replay", "--reason", "too_many_pixels").returncode == 0
    wait_until(lambda: service_lag(site, "storage") == 0 and service_lag(site, "preprocess") == 0,
               120, "the second replay to be consumed")
    assert db.count_results() == 4
    db.close()


def service_lag(site: Site, name: str) -> int | None:
    return next(s for s in site_status(site.settings) if s.service == name).lag


def records_in(site: Site, name: str) -> int:
    return next(s for s in site_status(site.settings) if s.service == name).total("records_in")


def test_a_camera_that_stops_delivering_is_reported_as_stalled(site: Site):
    site.env["FRAMEWIRE_CAMERA_STALL_S"] = "1.5"
    settings = site.settings
    gate = threading.Event()
    stop = StopSignal(install=False)

    def quiet_camera(_stop):
        from framewire.capture.sources import CapturedImage
        from framewire.contracts import utcnow

        yield CapturedImage(jpeg(synthetic_frame(0)), utcnow(), "test")
        gate.wait(60)  # then nothing: a camera that went dark

    ingest = Ingest(settings, stop=stop)
    runner = threading.Thread(target=ingest.run, args=({"cam-dark": quiet_camera},))
    runner.start()
    try:
        def stalled():
            ingest_status = next(s for s in site_status(settings) if s.service == "ingest")
            return [p for p in ingest_status.problems if "cam-dark stalled" in p]

        problems = wait_until(stalled, 60, "the stalled camera in status")
        assert "check its power, network and URL" in problems[0]
    finally:
        gate.set()
        stop.set()
        runner.join(30)


def test_a_partition_with_lag_and_no_live_consumer_is_reported(site: Site):
    site.start("preprocess")
    publish(site, [("cam-lag", jpeg(synthetic_frame(i))) for i in range(3)])
    wait_until(lambda: service_lag(site, "preprocess") == 0, 60, "preprocess to catch up")
    site.stop()
    publish(site, [("cam-lag", jpeg(synthetic_frame(i))) for i in range(3, 6)])

    def problems():
        status = next(s for s in site_status(site.settings) if s.service == "preprocess")
        return [p for p in status.problems if "no live process" in p]

    found = wait_until(problems, 30, "the lag-without-consumer problem")
    assert "framewire service preprocess" in found[0]


def test_the_supervisor_restarts_a_killed_service_and_status_counts_the_restart(site: Site):
    settings = site.settings
    os.environ.update(site.env)  # the supervisor's children inherit the site's settings
    try:
        sup = Supervisor(settings.model_copy(update={"embedded_broker": False}), ["storage"],
                         demo=False)
        sup.start()
        first = sup.children[0].process
        wait_until(lambda: any(s.alive for s in site_status(settings) if s.service == "storage"),
                   60, "storage to heartbeat")
        first.send_signal(signal.SIGKILL)
        first.wait(10)

        def restarted():
            sup.check()
            status = next(s for s in site_status(settings) if s.service == "storage")
            return [b for b in status.alive if b.restarts == 1]

        (beat,) = wait_until(restarted, 90, "a restarted storage heartbeat")
        assert beat.pid != first.pid
        status = next(s for s in site_status(settings) if s.service == "storage")
        assert any("restarted 1 time" in p for p in status.problems)
        sup.stop()
    finally:
        for key in site.env:
            os.environ.pop(key, None)


def test_back_pressure_counts_frames_waiting_before_inference_not_only_preprocess(site: Site):
    # inference runs once (so its group has committed), then stops: frames pile up after a
    # preprocess that keeps up, which ingest must see as the pipeline falling behind
    site.env["FRAMEWIRE_INGEST__MAX_LAG_FRAMES"] = "3"
    site.start("preprocess", "inference")
    publish(site, [("cam-bp", jpeg(synthetic_frame(i))) for i in range(2)])
    # lags alone can read 0 before inference took anything (under load, before the frames
    # reach frames.ready): wait for its heartbeats to count both frames too
    wait_until(lambda: records_in(site, "inference") >= 2 and service_lag(site, "inference") == 0
               and service_lag(site, "preprocess") == 0, 120,
               "both stages to take and commit the first frames")
    for proc in site.procs.pop("inference"):
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    for i in range(2, 7):  # one at a time: the embedded broker's high watermark is exact for
        # single-record batches (it under-reports a batch as its first record)
        publish(site, [("cam-bp", jpeg(synthetic_frame(i)))])
        wait_until(lambda: service_lag(site, "preprocess") == 0, 60, "preprocess to catch up")
    ingest = Ingest(site.settings, stop=StopSignal(install=False))
    probes = {name: LagProbe(site.settings, name) for name in STAGES}
    try:
        lags = wait_until(lambda: (lag := ingest.pipeline_lag(probes)).get("inference") and lag,
                          60, "the inference lag to show")
        # storage never ran here, so its (never committed) group does not count
        assert lags == {"preprocess": 0, "inference": 5}
        ingest.start_lag_watch()
        wait_until(ingest.is_behind, 30, "ingest to apply back-pressure")
    finally:
        for probe in probes.values():
            probe.close()
        ingest.stop.set()
        ingest.close()
