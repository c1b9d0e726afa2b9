"""Disaster recovery from the log, without a broker: times, ranges, headers, the embedded
broker's refusals, and storage replacing a result only when another model made it later.
On Apache Kafka with counts: tests/integration/test_recovery.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framewire.cli import app
from framewire.config import Settings
from framewire.contracts import Detection, FrameHeader, InferenceResult
from framewire.errors import ConfigError
from framewire.ops.logranges import parse_time, plan_range
from framewire.ops.logreplay import (
    REPLAY_HEADER,
    embedded_refusal,
    replay_headers,
    replay_topic,
)
from framewire.store.db import Database, open_database

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


# --- times -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-25T08:30:00", datetime(2026, 11, 25, 8, 30, tzinfo=UTC)),
    ("2026-11-25T09:30:00+01:00", datetime(2026, 11, 25, 8, 30, tzinfo=UTC)),
    ("2026-11-25T08:30:00Z", datetime(2026, 11, 25, 8, 30, tzinfo=UTC)),
    ("2h", NOW - timedelta(hours=2)),
    ("30m", NOW - timedelta(minutes=30)),
    ("1d", NOW - timedelta(days=1)),
    ("90s", NOW - timedelta(seconds=90)),
    ("now", NOW),
])
def test_times_are_iso_in_utc_when_zoneless_or_a_duration_ago(text: str, expected: datetime):
    got = parse_time(text, NOW)
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "2h30", "12", "2026-13-01"])
def test_a_time_that_is_neither_names_the_option_and_the_forms(text: str):
    with pytest.raises(ConfigError, match=r"--until .*ISO-8601.*30m, 2h, 1d"):
        parse_time(text, NOW, "--until")


def test_only_frame_topics_can_be_replayed_and_detections_points_at_rebuild_db():
    assert replay_topic("frames.raw") == "frames.raw"
    assert replay_topic("frames.ready") == "frames.ready"
    for topic in ("detections", "status", "deadletter", "nonsense"):
        with pytest.raises(ConfigError, match="cannot be replayed") as caught:
            replay_topic(topic)
    assert "rebuild-db" in str(caught.value)


# --- offset ranges ---------------------------------------------------------------------------

def test_range_from_offsets_for_times_within_the_retained_records():
    # records 100..199 retained; the range starts at 120 and ends before 150
    r = plan_range(0, low=100, high=200, start_at=120, end_at=150)
    assert (r.start, r.end, r.count, r.cut_by_retention) == (120, 150, 30, False)


def test_no_record_that_late_means_read_to_the_end_or_nothing():
    # --until later than every record: to the high watermark
    assert plan_range(1, 0, 200, 120, -1).count == 80
    # --since later than every record: nothing
    r = plan_range(2, 0, 200, -1, -1)
    assert (r.start, r.end, r.count) == (200, 200, 0)


def test_a_range_reaching_back_past_retention_starts_at_the_oldest_record_and_says_so():
    r = plan_range(3, low=100, high=200, start_at=100, end_at=160)
    assert (r.start, r.end, r.cut_by_retention) == (100, 160, True)
    # an end below the start (clock skew) reads nothing rather than going backwards
    assert plan_range(4, 0, 200, 150, 140).count == 0


def test_replayed_headers_keep_the_record_s_own_drop_its_trace_and_add_the_replay_mark():
    headers = [("traceparent", b"00-abc-def-01"), ("tracestate", b"x=1"),
               ("content-kind", b"jpeg"), (REPLAY_HEADER, b"older-replay")]
    assert replay_headers(headers, "r1") == [("content-kind", b"jpeg"), (REPLAY_HEADER, b"r1")]
    assert replay_headers(None, "r2") == [(REPLAY_HEADER, b"r2")]


# --- the embedded broker ---------------------------------------------------------------------

def test_the_embedded_broker_refuses_both_and_says_what_to_run_instead():
    embedded = Settings(home=Path("/nonexistent"))
    assert embedded.on_tansu
    for command, cannot in (("replay", "cannot re-run a time range"),
                            ("rebuild-db", "cannot rebuild the results tables")):
        message = embedded_refusal(embedded, command)
        assert message is not None and cannot in message
        assert "memory only" in message and "framewire run --broker kafka" in message
    assert embedded_refusal(Settings(broker="kafka"), "replay") is None
    assert embedded_refusal(Settings(embedded_broker=False), "rebuild-db") is None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    import os

    for name in list(os.environ):
        if name.startswith("FRAMEWIRE_"):
            monkeypatch.delenv(name)
    yield {"FRAMEWIRE_HOME": str(tmp_path / "home")}


def invoke(env: dict[str, str], *args: str):  # noqa: ANN201
    result = CliRunner().invoke(app, list(args), env=env)
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    return result.exit_code, " ".join(text.split())


@pytest.mark.parametrize(("args", "cannot"), [
    (("replay", "--topic", "frames.raw", "--since", "2h"), "cannot re-run a time range"),
    (("rebuild-db",), "cannot rebuild the results tables"),
])
def test_on_the_embedded_broker_both_commands_exit_2_and_name_what_they_cannot_do(
        clean_env: dict[str, str], args: tuple[str, ...], cannot: str):
    code, text = invoke(clean_env, *args)
    assert code == 2, text
    assert cannot in text and "framewire run --broker kafka" in text


def test_the_embedded_refusal_is_json_too(clean_env: dict[str, str]):
    result = CliRunner().invoke(app, ["rebuild-db", "--json"], env=clean_env)
    assert result.exit_code == 2
    start = result.stdout.index("{")
    assert json.loads(result.stdout[start:])["ok"] is False


def test_replaying_detections_exits_2_before_touching_a_broker(clean_env: dict[str, str]):
    # nothing listens on port 1: the check must come first
    env = {**clean_env, "FRAMEWIRE_EMBEDDED_BROKER": "false",
           "FRAMEWIRE_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    code, text = invoke(env, "replay", "--topic", "detections", "--since", "1h")
    assert code == 2, text
    assert "cannot be replayed" in text and "rebuild-db" in text


def test_rebuild_refuses_a_database_that_holds_results_before_touching_a_broker(
        clean_env: dict[str, str], tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'full.db'}"
    with open_database(url) as db:
        db.upsert_results([make_result("f-1")])
    env = {**clean_env, "FRAMEWIRE_EMBEDDED_BROKER": "false",
           "FRAMEWIRE_BOOTSTRAP_SERVERS": "127.0.0.1:1", "FRAMEWIRE_DATABASE_URL": url}
    code, text = invoke(env, "rebuild-db")
    assert code == 1, text
    assert "already holds 1 results" in text and "--force" in text
    with open_database(url) as db:
        assert db.count_results() == 1


# --- storage: a replayed frame's new result replaces the old one -----------------------------

def make_result(frame_id: str, version: str = "1.0", inferred: timedelta = timedelta(0),
                detections: list[Detection] | None = None, model: str = "centerface",
                camera_id: str = "cam-1") -> InferenceResult:
    return InferenceResult(
        header=FrameHeader(frame_id=frame_id, camera_id=camera_id,
                           seq=int(frame_id.rsplit("-", 1)[-1]), captured_at=T0,
                           ingested_at=T0),
        preprocessed_at=T0, inferred_at=T0 + inferred,
        orig_width=640, orig_height=360, model_name=model, model_version=version,
        provider="CPUExecutionProvider", too_dark=False, blurred=False, frozen=False,
        detections=detections or [])


def face(score: float) -> Detection:
    return Detection("face", 0, score, 1.0, 2.0, 30.0, 40.0)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database on each backend (PostgreSQL started only when asked for)."""
    url = (f"sqlite:///{tmp_path / 'results.db'}" if request.param == "sqlite"
           else str(request.getfixturevalue("postgres_db_url")))
    with open_database(url) as database:
        yield database


def test_a_redelivery_by_the_same_model_changes_nothing(db: Database):
    first = make_result("f-1", detections=[face(0.9)])
    assert db.store_results([first]).inserted == 1
    again = make_result("f-1", inferred=timedelta(minutes=5), detections=[face(0.1)] * 2)
    counts = db.store_results([again])
    assert (counts.inserted, counts.replaced, counts.unchanged) == (0, 0, 1)
    [row] = db.query_results()
    assert [d.score for d in row.detections] == [0.9]


def test_a_later_result_of_another_model_version_replaces_the_row_and_its_detections(
        db: Database):
    db.upsert_results([make_result("f-1", detections=[face(0.9)]), make_result("f-2")])
    newer = make_result("f-1", "2.0", timedelta(hours=1), [face(0.8), face(0.7)])
    assert db.upsert_results([newer, make_result("f-2")]) == 1  # f-2: a redelivery
    rows = {r.frame_id: r for r in db.query_results()}
    assert (rows["f-1"].model_version, rows["f-1"].detection_count) == ("2.0", 2)
    assert [d.score for d in rows["f-1"].detections] == [0.8, 0.7]
    assert rows["f-2"].model_version == "1.0"
    assert db.count_results() == 2
    assert db.cameras()[0].frames_stored == 2  # replaced, not counted again


def test_another_model_name_replaces_too_but_a_late_old_result_never_undoes_it(db: Database):
    db.upsert_results([make_result("f-1")])
    assert db.store_results([make_result("f-1", model="yolov8n",
                                         inferred=timedelta(hours=1))]).replaced == 1
    # the old model's result redelivered after the replay: inferred earlier, ignored
    assert db.store_results([make_result("f-1")]).unchanged == 1
    assert db.query_results()[0].model_name == "yolov8n"


def test_in_one_batch_the_later_other_model_result_wins(db: Database):
    """rebuild-db reads a replayed frame's old and new results in one batch, in log order."""
    old, new = make_result("f-1"), make_result("f-1", "2.0", timedelta(hours=1), [face(0.5)])
    counts = db.store_results([old, new, old])
    assert (counts.inserted, counts.replaced, counts.unchanged) == (1, 0, 2)
    [row] = db.query_results()
    assert (row.model_version, row.detection_count) == ("2.0", 1)
