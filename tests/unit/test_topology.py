"""The registry: stages from declarations, checked, in pipeline order; the topology command."""

from __future__ import annotations

import json

import pytest
from pydantic import Field
from typer.testing import CliRunner

from framewire.cli import app
from framewire.config import StageSettings, load_settings
from framewire.contracts import DeadLetter, FrameCaptured, FramePreprocessed, InferenceResult
from framewire.errors import ConfigError
from framewire.topology import Output, StageSpec, stage_settings, topology
from framewire.topology.registry import check


class ExtraSettings(StageSettings):
    threshold: float = Field(0.5, ge=0, le=1)


# a stage named by the `stages` setting (module:attribute), not installed as a package
EXTRA = StageSpec(name="extra", summary="test stage", entry="tests.unit.test_topology:EXTRA",
                  input="detections", input_contract=InferenceResult,
                  outputs=(Output("detections.extra", InferenceResult, "2d"),),
                  settings=ExtraSettings)


def spec(name: str, reads: str | None, writes: str | None, contract=InferenceResult,
         reads_as=InferenceResult) -> StageSpec:
    return StageSpec(name=name, summary=name, entry=f"x:{name}", input=reads,
                     input_contract=reads_as if reads else None,
                     outputs=(Output(writes, contract),) if writes else ())


def test_the_built_in_stages_make_the_pipeline_in_order():
    site = topology()
    assert site.names == ("gateway", "ingest", "preprocess", "inference", "analytics",
                          "alert_storage", "event_storage", "storage")
    # the gateway reads no topic: a source, which writes frames.raw through ingest's code
    assert [s.name for s in site.sources] == ["gateway", "ingest"]
    assert site.stage("gateway").outputs == ()
    assert {s.name: s.input for s in site.consumers} == {
        "preprocess": "frames.raw", "inference": "frames.ready", "analytics": "detections",
        "storage": "detections", "event_storage": "events", "alert_storage": "alerts"}
    topics = site.topics
    assert list(topics) == ["frames.raw", "frames.ready", "detections", "events", "alerts",
                            "deadletter", "status", "cameras", "control"]
    assert topics["frames.ready"].contract is FramePreprocessed
    assert (topics["detections"].writers, topics["detections"].readers) == (
        ("inference",), ("analytics", "storage"))
    assert topics["status"].single_partition and not topics["deadletter"].single_partition
    assert {n: t.retention for n, t in topics.items()} == {
        "frames.raw": "24h", "frames.ready": "1h", "detections": "30d", "events": "7d",
        "alerts": "30d", "deadletter": "7d", "status": "1h", "cameras": "-1", "control": "-1"}


def test_the_frames_path_holds_the_stages_that_carry_or_store_frames_not_a_branch():
    # back-pressure sums these stages' lags; the live line counts what the last of them stored
    assert [s.name for s in topology().frame_path] == ["preprocess", "inference", "storage"]
    # a plug-in that carries frames on is on it; one that turns them into events is a branch
    carries = spec("carries", "detections", "detections.extra")
    counts = spec("counts", "detections", "counts", contract=DeadLetter)
    site = check([*topology().stages, carries, counts])
    assert "carries" in site.names and "counts" in site.names
    assert [s.name for s in site.frame_path if s.name in ("carries", "counts")] == ["carries"]


def test_order_follows_the_topics_not_the_declaration_order():
    site = check([spec("sink", "b", None), spec("middle", "a", "b"),
                  spec("source", None, "a")])
    assert site.names == ("source", "middle", "sink")


@pytest.mark.parametrize(("specs", "message"), [
    ([spec("a", None, "x"), spec("a", None, "y")], "two stages are named 'a'"),
    ([spec("a", None, "x"), spec("b", "nowhere", None)],
     "reads 'nowhere', which no stage writes; topics written: x"),
    ([spec("a", None, "x", contract=FrameCaptured), spec("b", "x", None)],
     "reads 'x' as io.framewire.InferenceResult but a writes io.framewire.FrameCaptured"),
    ([spec("a", None, "deadletter", contract=DeadLetter)], "keeps for itself"),
    ([spec("a", None, "x"), spec("b", None, "x")], "both write 'x'"),
    ([spec("a", "y", "x"), spec("b", "x", "y")], "in a cycle"),
])
def test_declarations_that_do_not_fit_are_refused_saying_why(specs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check(specs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "Bad Name"}, "lower-case letters"),
    ({"input": "x"}, "both input and input_contract"),
    ({"entry": "no_colon"}, "module:attribute"),
    ({"outputs": (Output("UPPER", InferenceResult),)}, "topic name 'UPPER'"),
])
def test_a_malformed_declaration_is_refused(kwargs, message):
    base = {"name": "ok", "summary": "s", "entry": "m:a"}
    with pytest.raises(ConfigError, match=message):
        StageSpec(**{**base, **kwargs})


def test_the_stages_setting_adds_a_stage_with_its_topic_and_options():
    settings = load_settings(stages=["tests.unit.test_topology:EXTRA"],
                             stage_options={"extra": {"threshold": 0.8}},
                             retention={"detections.extra": "6h"}, topic_prefix="p.")
    site = topology(settings)
    assert site.names[-1] == "extra"
    assert site.topic("detections").readers == ("analytics", "storage", "extra")
    assert settings.topic("detections.extra") == "p.detections.extra"
    assert settings.retention_ms("detections.extra") == 6 * 3_600_000
    assert stage_settings(settings, site.stage("extra")).threshold == 0.8  # type: ignore[attr-defined]
    # the built-in stages keep their own settings fields
    assert stage_settings(settings, site.stage("inference")) is settings.inference


@pytest.mark.parametrize(("overrides", "message"), [
    ({"stage_options": {"extra": {"threshold": 2}}}, "stage_options.extra: threshold"),
    ({"stage_options": {"nope": {}}}, "unknown stage 'nope'"),
    ({"retention": {"detections.nope": "1h"}}, "unknown topic 'detections.nope'"),
    ({"stages": ["tests.unit.test_topology:missing"]}, "has no 'missing'"),
    ({"stages": ["no_such_module_xyz:STAGE"]}, "cannot import 'no_such_module_xyz'"),
    ({"stages": ["tests.unit.test_topology:ExtraSettings"]}, "not a framewire.topology"),
])
def test_bad_stage_settings_fail_at_start_naming_the_fix(overrides, message):
    stages = overrides.pop("stages", ["tests.unit.test_topology:EXTRA"])
    with pytest.raises(ConfigError, match=message):
        load_settings(stages=stages, **overrides)


def test_an_unknown_topic_name_is_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="known: frames.raw, frames.ready, detections"):
        load_settings().topic("frames.cooked")


def test_topology_json_lists_stages_groups_contracts_and_versions(monkeypatch):
    monkeypatch.setenv("FRAMEWIRE_TOPIC_PREFIX", "s1.")
    shown = CliRunner().invoke(app, ["topology", "--json"])
    assert shown.exit_code == 0, shown.output
    graph = json.loads(shown.stdout)
    stages = {s["name"]: s for s in graph["stages"]}
    assert list(stages) == ["gateway", "ingest", "preprocess", "inference", "analytics",
                            "alert_storage", "event_storage", "storage"]
    assert stages["ingest"]["kind"] == "source" and stages["ingest"]["group"] is None
    inference = stages["inference"]
    assert inference["group"] == "s1.framewire-inference"
    assert inference["input"] == {"topic": "frames.ready", "name": "s1.frames.ready",
                                  "contract": "io.framewire.FramePreprocessed",
                                  "version": inference["input"]["version"]}
    assert inference["input"]["version"] >= 1
    assert inference["settings"]["model"] == "InferenceSettings"
    assert inference["settings"]["values"]["batch_size"] == 8
    assert stages["storage"]["outputs"] == []
    topics = {t["topic"]: t for t in graph["topics"]}
    assert topics["status"]["partitions"] == 1 and topics["status"]["system"]
    assert topics["detections"]["readers"] == ["analytics", "storage"]
    assert (topics["events"]["readers"], topics["alerts"]["readers"]) == (["event_storage"],
                                                                          ["alert_storage"])
    assert set(topics["frames.raw"]) == {"topic", "name", "contract", "version", "retention",
                                         "partitions", "writers", "readers", "system",
                                         "compacted"}
    assert topics["cameras"] | {"name": None} == {
        "topic": "cameras", "name": None, "contract": "json:framewire.config.CameraSettings",
        "version": None, "retention": "-1", "partitions": 1, "writers": ["gateway"],
        "readers": ["gateway", "ingest", "storage"], "system": False, "compacted": True}


def test_the_extending_page_shows_the_plugin_as_it_is_and_it_stays_under_50_lines():
    from pathlib import Path

    root = Path(__file__).parents[2]
    code = (root / "tests/plugins/confident/framewire_confident/__init__.py").read_text()
    toml = (root / "tests/plugins/confident/pyproject.toml").read_text()
    page = (root / "docs/extending.md").read_text()
    assert code in page and toml in page
    lines = len(code.splitlines())
    assert lines < 50
    assert f"A whole stage in {lines} lines" in page
