"""Configuration: defaults, environment and YAML, and errors that say what to fix."""

from __future__ import annotations

import pytest

from framewire.config import load_settings
from framewire.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("FRAMEWIRE_"):
            monkeypatch.delenv(key)


def test_defaults_put_state_under_dot_framewire():
    s = load_settings()
    assert s.resolved_database_url.endswith(".framewire/framewire.db")
    assert s.topic("frames.raw") == "frames.raw"


def test_partitions_follow_the_cores_on_the_embedded_broker_only(monkeypatch):
    import framewire.procutil

    for cores, expected in [(1, 4), (2, 4), (3, 6), (6, 12), (64, 12)]:
        monkeypatch.setattr(framewire.procutil, "usable_cores", lambda c=cores: c)
        assert load_settings().topic_partitions == expected
    assert load_settings(embedded_broker=False).topic_partitions == 12
    assert load_settings(partitions=5).topic_partitions == 5


def test_spans_get_their_own_sqlite_file_but_share_a_server_database(monkeypatch):
    assert load_settings().resolved_span_database_url.endswith(".framewire/framewire-spans.db")
    monkeypatch.setenv("FRAMEWIRE_DATABASE_URL", "postgresql+psycopg://fw@db:5432/fw")
    assert load_settings().resolved_span_database_url == "postgresql+psycopg://fw@db:5432/fw"


def test_nested_environment_variables_override_defaults(monkeypatch):
    monkeypatch.setenv("FRAMEWIRE_INFERENCE__BATCH_SIZE", "4")
    monkeypatch.setenv("FRAMEWIRE_TOPIC_PREFIX", "site1.")
    s = load_settings()
    assert s.inference.batch_size == 4
    assert s.topic("detections") == "site1.detections"
    assert s.group("storage") == "site1.framewire-storage"


def test_yaml_file_is_read_and_environment_wins_over_it(monkeypatch, tmp_path):
    cfg = tmp_path / "fw.yaml"
    cfg.write_text("partitions: 6\nkafka:\n  security.protocol: SSL\n"
                   "cameras:\n  - camera_id: door\n    url: rtsp://10.0.0.9/s1\n")
    monkeypatch.setenv("FRAMEWIRE_CONFIG", str(cfg))
    monkeypatch.setenv("FRAMEWIRE_PARTITIONS", "8")
    s = load_settings()
    assert s.partitions == 8 and s.topic_partitions == 8
    assert s.kafka == {"security.protocol": "SSL"}
    assert s.cameras[0].camera_id == "door"


def test_bad_value_error_names_field_value_and_variable(monkeypatch):
    monkeypatch.setenv("FRAMEWIRE_INFERENCE__BATCH_SIZE", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "inference.batch_size" in message
    assert "'0'" in message
    assert "FRAMEWIRE_INFERENCE__BATCH_SIZE" in message


def test_bootstrap_servers_without_port_is_rejected_with_an_example(monkeypatch):
    monkeypatch.setenv("FRAMEWIRE_BOOTSTRAP_SERVERS", "kafka.local")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_settings()


def test_unknown_setting_in_yaml_is_rejected(monkeypatch, tmp_path):
    cfg = tmp_path / "fw.yaml"
    cfg.write_text("partitons: 6\n")
    monkeypatch.setenv("FRAMEWIRE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="partitons"):
        load_settings()


def test_missing_config_file_says_which_path(monkeypatch, tmp_path):
    monkeypatch.setenv("FRAMEWIRE_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_settings()


def test_camera_id_with_spaces_is_rejected():
    with pytest.raises(ConfigError, match="camera_id"):
        load_settings(cameras=[{"camera_id": "front door", "url": "rtsp://x/1"}])


def test_fetch_waits_are_shorter_where_they_buy_latency_on_the_embedded_broker():
    from framewire.broker.client import consumer_defaults

    embedded = load_settings(embedded_broker=True)
    waits = {s: consumer_defaults(embedded, getattr(embedded, s).embedded_fetch_wait_ms)
             ["fetch.wait.max.ms"] for s in ("preprocess", "inference", "storage")}
    assert waits == {"preprocess": 50, "inference": 25, "storage": 20}
    assert consumer_defaults(load_settings(embedded_broker=False), 25) == {}


def test_a_stage_fetch_wait_of_zero_is_refused_with_the_field_named():
    with pytest.raises(ConfigError, match="fetch_wait_ms"):
        load_settings(storage={"fetch_wait_ms": 0})
