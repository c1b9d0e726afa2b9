"""Secrets stay secret and files stay private: a whole `framewire run` with a database
password, camera credentials and a SASL password, every output of it searched for them."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, TopicPartition

from framewire.broker.client import EMBEDDED_CLIENT_DEFAULTS, client_config
from framewire.store.db import open_database
from tests.fixtures.cameras import MjpegCamera
from tests.fixtures.common import free_port
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration

# distinctive, so that a hit can only be a leak
DB_PASSWORD = "dbpw-Q7x2Zr"
CAMERA_PASSWORD = "campw-K9d3Vm"
CAMERA_TOKEN = "camtk-H4s8Wp"
SASL_PASSWORD = "saslpw-L2m6Tb"
SECRETS = (DB_PASSWORD, CAMERA_PASSWORD, CAMERA_TOKEN, SASL_PASSWORD)


def records_on_every_topic(site: Site) -> bytes:
    """Keys, values and headers of every record on the site's topics, end to end."""
    settings = site.settings
    consumer = Consumer(client_config(settings, **{
        "group.id": "secret-grep", "enable.auto.commit": False, "log_level": 0,
        "enable.partition.eof": True}))
    try:
        topics = consumer.list_topics(timeout=10).topics
        parts = [TopicPartition(name, p, 0) for name, meta in topics.items()
                 if name.startswith(site.prefix) for p in meta.partitions]
        consumer.assign(parts)
        found, left = bytearray(), {(tp.topic, tp.partition) for tp in parts}
        while left:
            msg = consumer.poll(10)
            assert msg is not None, f"no end of partition for {sorted(left)}"
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                left.discard((msg.topic(), msg.partition()))
                continue
            found += (msg.key() or b"") + (msg.value() or b"")
            found += b"".join(k.encode() + (v or b"") for k, v in msg.headers() or [])
        return bytes(found)
    finally:
        consumer.close()


def rows_of_every_table(url: str) -> bytes:
    """Every row of every table (results, detections, dead letters, spans...) as text."""
    engine = sa.create_engine(url)
    try:
        tables = sa.MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            # repr of the values: a Row's own repr shortens long strings
            return "\n".join(repr(tuple(row)) for table in tables.sorted_tables
                             for row in conn.execute(sa.select(table))).encode()
    finally:
        engine.dispose()


def leaks(outputs: dict[str, bytes]) -> list[str]:
    return [f"{secret} in {where}" for where, data in outputs.items()
            for secret in SECRETS if secret.encode() in data]


def test_a_run_shows_no_secret_anywhere_and_keeps_its_files_private(
        site: Site, postgres_db_url: str, mjpeg_camera: MjpegCamera, tmp_path: Path):
    db_url = postgres_db_url.replace("//postgres@", f"//postgres:{DB_PASSWORD}@")
    snapshot = (f"http://viewer:{CAMERA_PASSWORD}@127.0.0.1:{mjpeg_camera.port}/snapshot.jpg"
                f"?token={CAMERA_TOKEN}&channel=1")
    # nothing listens there: ingest logs the camera's URL at each attempt
    rtsp = f"rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:{free_port()}/s1?token={CAMERA_TOKEN}"
    site.env.update({
        "FRAMEWIRE_EMBEDDED_BROKER": "false",  # the session's broker, as an existing cluster
        "FRAMEWIRE_DATABASE_URL": db_url,
        "FRAMEWIRE_GATEWAY__PORT": "0",  # a free port: another run may hold 8080
        "FRAMEWIRE_CAMERAS": json.dumps([{"camera_id": "door", "url": snapshot, "fps": 10},
                                         {"camera_id": "gate", "url": rtsp}]),
        # a librdkafka property the plaintext broker ignores, as a SASL site would set it;
        # the embedded broker's group timing, as the site does not know it runs on one
        "FRAMEWIRE_KAFKA": json.dumps({"sasl.password": SASL_PASSWORD,
                                       **EMBEDDED_CLIENT_DEFAULTS}),
        "FRAMEWIRE_INFERENCE__STORE_FRAMES": "all",  # every frame kept as blob files in home
    })
    env = {**os.environ, **site.env}
    run_out = tmp_path / "run.out"
    database = open_database(db_url)
    with run_out.open("wb") as out:
        run = subprocess.Popen([sys.executable, "-m", "framewire.cli", "run", "--no-demo"],
                               env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: database.count_results("door") >= 3, 120,
                   "3 frames of the snapshot camera stored")
        ingest_log = site.home / "logs" / "ingest.log"
        wait_until(lambda: "camera stream cannot be opened" in ingest_log.read_text(), 30,
                   "ingest to log the RTSP camera it cannot reach", ignoring=(OSError,))
        commands = [subprocess.Popen([sys.executable, "-m", "framewire.cli", "status", *args],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for args in ((), ("--json",))]
        status = [command.communicate(timeout=60) for command in commands]
    finally:
        database.close()
        run.send_signal(signal.SIGINT)
        assert run.wait(60) == 0, run_out.read_text()
    # the camera got its credentials, in the Authorization header
    assert mjpeg_camera.server.authorization == "Basic " + base64.b64encode(
        f"viewer:{CAMERA_PASSWORD}".encode()).decode()

    records = records_on_every_topic(site)
    outputs = {"framewire run output": run_out.read_bytes(),
               "framewire status": b"".join(status[0]),
               "framewire status --json": b"".join(status[1]),
               "records": records, "database rows and spans": rows_of_every_table(db_url)}
    outputs |= {str(p.relative_to(site.home)): p.read_bytes()
                for p in sorted(site.home.rglob("*")) if p.is_file()}
    assert not leaks(outputs), leaks(outputs)
    # ...and the URLs were there to leak, masked
    assert b"db=postgresql+psycopg://postgres:***@" in outputs["framewire run output"]
    assert b"viewer:***@127.0.0.1" in records and b"token=***&channel=1" in records
    assert b"viewer:***@127.0.0.1" in outputs["database rows and spans"]  # ingest's spans
    assert any(name.startswith("blobs/") for name in outputs)
    logged = outputs["logs/ingest.log"]
    assert b"effective config" in logged and b"rtsp://admin:***@" in logged
    assert json.loads(status[1][0]), status[1][1]

    # files private: home and its folders 0700, its files 0600 (sockets and FIFOs aside)
    wrong = [f"{p.relative_to(site.home.parent)} {stat.filemode(p.stat().st_mode)}"
             for p in [site.home, *site.home.rglob("*")]
             if (p.is_dir() and stat.S_IMODE(p.stat().st_mode) != 0o700)
             or (p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077)]
    assert not wrong, wrong
