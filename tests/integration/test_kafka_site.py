"""Apache Kafka as a site runs it: a managed broker that keeps its data across a restart,
topics made and checked from the settings, broker nodes in ``framewire status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from framewire.broker.client import ensure_topics
from framewire.broker.cluster import free_port_block
from tests.fixtures.common import ensure_debian_packages, wait_until
from tests.fixtures.kafka import Site

pytestmark = pytest.mark.integration


def framewire(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framewire.cli", *args], env={**os.environ,
                          **env}, capture_output=True, text=True, timeout=timeout)


def describe(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(30).items()}


def start_broker_command(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``framewire broker --kind kafka`` in the background; returns once it says it listens."""
    out = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "framewire.cli", "broker", "--kind", "kafka"],
                            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"framewire broker exited: {log.read_text()[-3000:]}")
        return "broker listening" in log.read_text(errors="replace")

    wait_until(listening, 180, "framewire broker --kind kafka to listen")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


# with -m slow: make test keeps a node's data across a restart through the supervisor's
# restart of a killed node below
@pytest.mark.slow
def test_managed_kafka_keeps_topics_and_records_across_a_restart(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    ensure_debian_packages(request.config, {"java": "default-jre-headless", "mvn": "maven"})
    port = free_port_block(2)
    env = {"FRAMEWIRE_HOME": str(tmp_path / "home"),
           "FRAMEWIRE_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "FRAMEWIRE_PARTITIONS": "2"}
    proc = start_broker_command(env, tmp_path / "broker.out")
    try:
        status = json.loads(framewire({**env, "FRAMEWIRE_BROKER": "kafka"}, "status",
                                      "--json").stdout)
        broker = next(s for s in status if s["service"] == "broker")
        assert broker["kind"] == "kafka"
        assert [(n["node_id"], n["alive"], n["under_replicated_partitions"])
                for n in broker["instances"]] == [(1, True, 0)]
        assert broker["instances"][0]["pid"] is not None
        producer = Producer({"bootstrap.servers": env["FRAMEWIRE_BOOTSTRAP_SERVERS"],
                             "acks": "all"})
        for i in range(10):
            producer.produce("detections", key=b"cam-1", value=f"result {i}".encode())
        assert producer.flush(30) == 0
    finally:
        stop(proc)
    assert (tmp_path / "home" / "kafka" / "node-1" / "data" / "meta.properties").exists()

    proc = start_broker_command(env, tmp_path / "broker-again.out")
    try:
        consumer = Consumer({"bootstrap.servers": env["FRAMEWIRE_BOOTSTRAP_SERVERS"],
                             "group.id": f"check-{uuid.uuid4().hex[:6]}",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe(["detections"])
        values: list[bytes] = []
        wait_until(lambda: values.extend(m.value() for m in consumer.consume(10, 1.0)
                                          if m.error() is None) or len(values) >= 10, 60,
                   "the 10 records written before the restart")
        consumer.close()
        assert values == [f"result {i}".encode() for i in range(10)]
    finally:
        stop(proc)


def test_topics_carry_replication_min_isr_and_retention_from_the_settings(
        kafka_site: Site) -> None:
    settings = kafka_site.settings
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    topics = admin.list_topics(timeout=10).topics
    raw = topics[settings.topic("frames.raw")]
    assert len(raw.partitions) == 4
    assert {len(p.replicas) for p in raw.partitions.values()} == {3}
    configs = describe(admin, settings.topic("frames.raw"))
    assert configs["min.insync.replicas"] == "2"
    assert configs["retention.ms"] == str(3_600_000)  # raw frames: 1 h under privacy mode
    assert describe(admin, settings.topic("detections"))["retention.ms"] == str(30 * 86_400_000)


def test_drifted_topic_config_is_reported_and_apply_sets_it_back(kafka_site: Site) -> None:
    settings = kafka_site.settings
    topic = settings.topic("frames.raw")
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)

    checked = framewire(kafka_site.env, "topics", "--json")
    assert checked.returncode == 1, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is False
    assert any(line.startswith(f"{topic}: retention.ms=60000") for line in report["drift"]), \
        report

    applied = framewire(kafka_site.env, "topics", "--apply", "--json")
    assert applied.returncode == 0, applied.stderr
    assert describe(admin, topic)["retention.ms"] == str(settings.retention_ms("frames.raw"))
    again = framewire(kafka_site.env, "topics")
    assert again.returncode == 0 and "topics match the settings" in again.stderr


def test_partitions_are_added_when_the_setting_grows(kafka_site: Site) -> None:
    grown = kafka_site.settings.model_copy(update={"partitions": 6})
    ensure_topics(grown)
    admin = AdminClient({"bootstrap.servers": grown.bootstrap_servers})

    def partitions() -> dict[str, int]:
        topics = admin.list_topics(timeout=10).topics
        return {t: len(topics[grown.topic(t)].partitions) for t in ("frames.ready", "status")}

    # the node that answers may learn of the new partitions a moment after the controller
    seen = wait_until(lambda: (found := partitions())["frames.ready"] == 6 and found, 30,
                      "6 partitions in the metadata")
    assert seen == {"frames.ready": 6, "status": 1}
    def watermarks() -> list[tuple[int, int]] | None:
        # a new client each time: one keeps the partition count of its first metadata answer,
        # and the node that gave it may learn of the new partitions a moment later
        consumer = Consumer({"bootstrap.servers": grown.bootstrap_servers, "group.id": "x"})
        try:
            return [consumer.get_watermark_offsets(
                TopicPartition(grown.topic("frames.ready"), p), 10) for p in range(6)]
        except KafkaException:
            return None
        finally:
            consumer.close()

    lows = wait_until(watermarks, 30, "every node to know the new partitions")
    assert lows == [(0, 0)] * 6


def test_status_lists_every_node_of_an_existing_cluster(kafka_site: Site) -> None:
    done = framewire(kafka_site.env, "status", "--json")
    assert done.returncode == 0, done.stderr
    broker = next(s for s in json.loads(done.stdout) if s["service"] == "broker")
    assert broker["kind"] == "external"
    assert [n["node_id"] for n in broker["instances"]] == [1, 2, 3]
    assert all(n["alive"] and n["under_replicated_partitions"] == 0
               for n in broker["instances"])
    assert broker["problems"] == []


@pytest.mark.slow  # make test keeps a node's kill -9 (tests/chaos/test_kafka_nodes.py)
def test_supervisor_restarts_a_killed_kafka_node_which_comes_back_with_its_data(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from framewire.config import load_settings
    from framewire.ops.supervisor import Supervisor

    ensure_debian_packages(request.config, {"java": "default-jre-headless", "mvn": "maven"})
    settings = load_settings(home=tmp_path / "home", broker="kafka", partitions=2,
                             bootstrap_servers=f"127.0.0.1:{free_port_block(2)}")
    sup = Supervisor(settings, services=[])
    sup.start()
    try:
        producer = Producer({"bootstrap.servers": sup.settings.bootstrap_servers, "acks": "all"})
        producer.produce("frames.raw", key=b"cam-1", value=b"kept")
        assert producer.flush(30) == 0
        node = sup.kafka_nodes[0]
        first_pid = node.process.pid if node.process else None
        os.kill(first_pid, signal.SIGKILL)  # type: ignore[arg-type]
        events: list[str] = []

        def restarted() -> bool:
            events.extend(sup.check())
            return node.alive and node.process is not None and node.process.pid != first_pid

        wait_until(restarted, 60, "the supervisor to restart the killed Kafka node")
        assert any("Apache Kafka node 1 exited" in e for e in events), events
        sup.kafka.wait_ready(120)  # type: ignore[union-attr]
        consumer = Consumer({"bootstrap.servers": sup.settings.bootstrap_servers,
                             "group.id": "after-restart", "auto.offset.reset": "earliest"})
        consumer.subscribe(["frames.raw"])
        got: list[bytes] = []
        wait_until(lambda: got.extend(m.value() for m in consumer.consume(10, 1.0)
                                      if m.error() is None) or got, 60, "the record back")
        consumer.close()
        assert got == [b"kept"]
    finally:
        sup.stop()
