"""A stage from another package: installed with pip, found through the entry-point group, run
through the real broker beside Framewire's own stages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framewire.broker.client import ensure_topics
from framewire.broker.reading import read_topic
from framewire.contracts import Detection, FrameHeader, InferenceResult, utcnow
from framewire.contracts.codec import Codec
from framewire.runtime import Publisher
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration
PLUGIN = Path(__file__).parents[1] / "plugins" / "confident"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plug-in installed (pip, no network) into a folder of its own: the
    processes that get it on PYTHONPATH see its entry point, this one does not."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN, work / "src")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(work / "site"), str(work / "src")],
                   check=True, timeout=300)
    return work / "site"


def framewire(site: Site, plugin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **site.env, "PYTHONPATH": str(plugin)}
    return subprocess.run([sys.executable, "-m", "framewire.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def result(camera: str, seq: int, scores: list[float]) -> InferenceResult:
    now = utcnow()
    return InferenceResult(
        header=FrameHeader(frame_id=f"{camera}-{seq}", camera_id=camera, seq=seq,
                           captured_at=now, ingested_at=now),
        preprocessed_at=now, inferred_at=now, orig_width=640,
        orig_height=480, model_name="test", model_version="1", provider="cpu",
        too_dark=False, blurred=False, frozen=False,
        detections=[Detection("face", 0, s, 1, 2, 3, 4) for s in scores])


def test_a_plugin_stage_is_in_the_topology_and_filters_detections_through_the_broker(
        broker, tmp_path: Path, plugin_path: Path):
    site = Site(broker, tmp_path / "home")
    settings = site.settings  # this process: Framewire's own stages only
    site.env["PYTHONPATH"] = str(plugin_path)
    site.env["FRAMEWIRE_STAGE_OPTIONS__CONFIDENT__MIN_SCORE"] = "0.6"

    shown = framewire(site, plugin_path, "topology", "--json")
    assert shown.returncode == 0, shown.stderr
    graph = json.loads(shown.stdout)
    names = [s["name"] for s in graph["stages"]]
    assert names[:8] == ["gateway", "ingest", "preprocess", "inference", "analytics",
                         "alert_storage", "event_storage", "storage"]
    (stage,) = [s for s in graph["stages"] if s["name"] == "confident"]
    assert stage["input"]["topic"] == "detections"
    assert stage["group"] == f"{site.prefix}framewire-confident"
    assert [o["name"] for o in stage["outputs"]] == [f"{site.prefix}detections.confident"]
    assert stage["settings"]["values"]["min_score"] == 0.6
    readers = {t["topic"]: t["readers"] for t in graph["topics"]}
    assert readers["detections"] == ["analytics", "storage", "confident"]

    ensure_topics(settings)
    site.start("confident")
    pub = Publisher(settings, "test")
    try:
        for seq in range(10):
            pub.publish("detections", result("cam-1", seq, [0.3, 0.7, 0.95]), key="cam-1")
        pub.flush(30)
    finally:
        pub.close()

    codec, out_topic = Codec(), f"{site.prefix}detections.confident"

    def filtered() -> list[InferenceResult]:
        try:
            return [codec.decode(m.value(), InferenceResult)
                    for m in read_topic(settings, out_topic)]
        except Exception:  # noqa: BLE001 (the stage makes its topic when it starts)
            return []

    wait_until(lambda: len(filtered()) >= 10, 90, "10 filtered results")
    results = filtered()
    assert sorted(r.seq for r in results) == list(range(10))
    # Avro floats are 32-bit: compare as such
    assert all([round(d.score, 4) for d in r.detections] == [0.7, 0.95] for r in results)
    assert site.alive("confident")

    def confident_status() -> dict:
        shown = framewire(site, plugin_path, "status", "--json")
        assert shown.returncode == 0, shown.stderr
        return next(s for s in json.loads(shown.stdout) if s["service"] == "confident")

    # status knows the plug-in's group: its lag, its live process
    wait_until(lambda: (lambda s: s["alive"] and s["lag"] == 0)(confident_status()), 60,
               "the plug-in stage alive with no lag in framewire status")
