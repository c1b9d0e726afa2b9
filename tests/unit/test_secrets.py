"""Secrets kept secret: masked URLs, SecretStr settings, and what logs, faults and letters show."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
from pydantic import SecretStr

from framewire.broker.client import client_config
from framewire.config import load_settings
from framewire.errors import ConfigError
from framewire.runtime.heartbeat import Counters
from framewire.secrets import mask_url, mask_urls_in, masked_settings
from framewire.telemetry.logs import ConsoleFormatter, JsonFormatter


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FRAMEWIRE_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(("url", "shown"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
    ("rtsp://10.0.0.5/s1", "rtsp://10.0.0.5/s1"),
    ("rtsp://admin@10.0.0.5/s1", "rtsp://admin@10.0.0.5/s1"),
    ("postgresql+psycopg://fw:s3cr3t@db:5432/fw", "postgresql+psycopg://fw:***@db:5432/fw"),
    ("postgresql://fw:p@ss/w:rd@db/fw", "postgresql://fw:***@db/fw"),
    ("rtsp://u:p?w@cam/s?token=t", "rtsp://u:***@cam/s?token=***"),
    ("http://cam/snap?email=a@b.org&ch=1", "http://cam/snap?email=a@b.org&ch=1"),
    ("http://cam/snap.jpg?token=abc&ch=1", "http://cam/snap.jpg?token=***&ch=1"),
    ("http://cam/snap?password=x&key=y&secret=z&auth=a&sig=b&user=u",
     "http://cam/snap?password=***&key=***&secret=***&auth=***&sig=***&user=u"),
    ("https://u:p@cam/s?access_token=t&X-Amz-Signature=s&apiKey=k#frag",
     "https://u:***@cam/s?access_token=***&X-Amz-Signature=***&apiKey=***#frag"),
    ("sqlite:////var/lib/framewire/framewire.db", "sqlite:////var/lib/framewire/framewire.db"),
    ("/data/cameras/door.mp4", "/data/cameras/door.mp4"),
    ("http://cam/snap?flag&ch=2", "http://cam/snap?flag&ch=2"),
])  # fmt: skip
def test_mask_url_hides_passwords_and_credential_parameters_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_urls_inside_text_are_masked_and_the_rest_kept() -> None:
    text = "cannot open 'rtsp://a:pw1@cam/s?token=tk1' then http://x/y?sig=s1 (retrying)"
    assert mask_urls_in(text) == ("cannot open 'rtsp://a:***@cam/s?token=***' "
                                  "then http://x/y?sig=*** (retrying)")
    # what ends a URL in text is a guess: punctuation after a secret is masked with it
    assert mask_urls_in("(see http://x/y?sig=s1).") == "(see http://x/y?sig=***"


def with_secrets(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("FRAMEWIRE_DATABASE_URL", "postgresql+psycopg://fw:dbpw1@db:5432/fw")
    monkeypatch.setenv("FRAMEWIRE_KAFKA", json.dumps({
        "security.protocol": "SASL_SSL", "sasl.username": "ingest", "sasl.password": "saslpw1",
        "ssl.key.password": "keypw1", "basic.auth.user.info": "sr:srpw1"}))
    monkeypatch.setenv("FRAMEWIRE_CAMERAS", json.dumps([
        {"camera_id": "door", "url": "rtsp://cam:campw1@10.0.0.9/s1?token=camtk1"}]))
    return load_settings()


SECRETS = ("dbpw1", "saslpw1", "keypw1", "srpw1", "campw1", "camtk1")


def test_secret_settings_are_secretstr_and_masked_in_the_effective_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = with_secrets(monkeypatch)
    assert isinstance(settings.database_url, SecretStr)
    assert isinstance(settings.kafka["sasl.password"], SecretStr)
    shown = masked_settings(settings)
    assert shown["database_url"] == "postgresql+psycopg://fw:***@db:5432/fw"
    assert shown["kafka"] == {"security.protocol": "SASL_SSL", "sasl.username": "ingest",
                              "sasl.password": "***", "ssl.key.password": "***",
                              "basic.auth.user.info": "***"}
    assert shown["cameras"][0]["url"] == "rtsp://cam:***@10.0.0.9/s1?token=***"
    text = json.dumps(shown) + repr(settings) + str(settings)
    assert not [s for s in SECRETS if s in text]


def test_the_real_secrets_reach_librdkafka_and_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = with_secrets(monkeypatch)
    conf = client_config(settings)
    assert conf["sasl.password"] == "saslpw1" and conf["ssl.key.password"] == "keypw1"
    assert settings.resolved_database_url == "postgresql+psycopg://fw:dbpw1@db:5432/fw"


def test_a_configuration_error_shows_the_bad_value_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEWIRE_CAMERAS", json.dumps([
        {"camera_id": "bad id!", "url": "rtsp://cam:campw1@10.0.0.9/s1?token=camtk1"}]))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "cameras.0.camera_id" in str(caught.value)
    assert "campw1" not in str(caught.value) and "camtk1" not in str(caught.value)


@pytest.mark.parametrize("formatter", [JsonFormatter("ingest"), ConsoleFormatter("ingest")])
def test_log_lines_mask_urls_in_messages_extras_and_tracebacks(
        formatter: logging.Formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test_secrets")
    logger.addHandler(handler)
    try:
        try:
            raise OSError("cannot reach http://u:campw1@cam/x?token=camtk1")
        except OSError:
            logger.exception("camera rtsp://u:campw1@cam/s failed",
                             extra={"source": "http://cam/snap?key=camtk1"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert "u:***@cam" in line and "key=***" in line
    assert "campw1" not in line and "camtk1" not in line


def test_a_fault_naming_a_url_is_reported_masked() -> None:
    counters = Counters()
    counters.set_fault("source", "http://u:campw1@cam/snap?token=camtk1 does not answer")
    assert counters.faults == ["source: http://u:***@cam/snap?token=*** does not answer"]
