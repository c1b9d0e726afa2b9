"""The managed Apache Kafka with kafka_security=sasl_ssl: the pipeline and the analytics
(faust-streaming) over TLS and SASL/SCRAM, each service as its own principal; ACLs and the
listener refuse the rest."""

from __future__ import annotations

import json
import re
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from framewire.analytics.records import AnalyticsEvent
from framewire.broker.client import client_config
from framewire.broker.cluster import KafkaCluster, free_port_block
from framewire.broker.security import ADMIN, KafkaSecurity
from framewire.capture.ingest import Ingest
from framewire.capture.sources import CapturedImage
from framewire.config import Settings
from framewire.contracts import utcnow
from framewire.runtime import StopSignal
from tests.fixtures.common import ensure_debian_packages
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_analytics_service import (
    configure,
    events_consumer,
    expected,
    publish,
    read_events,
)
from tests.integration.test_kafka_site import framewire, start_broker_command, stop
from tests.integration.test_pipeline import STAGES, stored_count
from tests.unit.test_analytics_agent import results

pytestmark = pytest.mark.integration
FRAMES = 8


def as_principal(site: Site, user: str) -> Settings:
    return site.settings.model_copy(update={"kafka_principal": user})


DENIED = re.compile(r"Principal = (\S+) is Denied operation = (\S+) .* on resource = (\S+)")


def denials(cluster: KafkaCluster, site: Site) -> set[tuple[str, str, str]]:
    """(principal, operation, resource) the node's authorizer refused on the site's topics
    and groups, as its log (kafka.authorizer.logger) says."""
    found = (DENIED.search(line) for line in
             cluster.node(1).log_path.read_text(errors="replace").splitlines())
    return {(m[1], m[2], m[3]) for m in found if m is not None and site.prefix in m[3]}


def broker_errors(conf: dict[str, Any]) -> tuple[dict[str, Any], list[KafkaError]]:
    """``conf`` with an error callback that collects what the client hears."""
    errors: list[KafkaError] = []
    return {**conf, "error_cb": errors.append, "log_level": 0}, errors


# exactly_once over TLS in the long runs (-m slow): make test keeps within its time budget
@pytest.mark.parametrize("delivery", [
    "at_least_once", pytest.param("exactly_once", marks=pytest.mark.slow)])
def test_the_pipeline_runs_over_tls_and_scram_each_service_as_its_own_principal(
        secure_kafka: KafkaCluster, secure_site: Site, delivery: str) -> None:
    secure_site.env["FRAMEWIRE_DELIVERY"] = delivery
    # the services get no admin password: each can only connect as itself
    KafkaSecurity(secure_site.home).password_path(ADMIN).unlink()
    secure_site.start(*STAGES)
    ingest = Ingest(as_principal(secure_site, "ingest"), stop=StopSignal(install=False))
    ingest.start_lag_watch()  # it reads every stage's group offsets as ingest
    try:
        for i in range(FRAMES):
            ingest.offer("cam-tls", CapturedImage(jpeg(synthetic_frame(i)), utcnow(), "test"))
        wait_until(lambda: stored_count(secure_site) >= FRAMES, 120, f"{FRAMES} stored results")
    finally:
        ingest.close()
    assert ingest.publisher.counters.records_out == FRAMES
    assert stored_count(secure_site) == FRAMES
    assert all(secure_site.alive(s) for s in STAGES)
    # every service had what it needed, and needed nothing more
    assert denials(secure_kafka, secure_site) == set()


def test_storage_principal_cannot_write_frames_raw_or_read_it(
        secure_kafka: KafkaCluster, secure_site: Site) -> None:
    storage = as_principal(secure_site, "storage")
    outcome: dict[str, KafkaError | None] = {}
    producer = Producer(client_config(storage, acks="all", log_level=0))
    for name in ("frames.raw", "deadletter"):
        producer.produce(storage.topic(name), b"not a frame",
                         on_delivery=lambda err, msg: outcome.__setitem__(msg.topic(), err))
    assert producer.flush(30) == 0
    raw_error = outcome[storage.topic("frames.raw")]
    assert raw_error is not None
    assert raw_error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert outcome[storage.topic("deadletter")] is None  # its own dead letters: allowed

    consumer = Consumer(client_config(storage, {"log_level": 0}, **{
        "group.id": storage.group("storage"), "auto.offset.reset": "earliest"}))
    consumer.subscribe([storage.topic("frames.raw")])
    try:
        def refused() -> bool:
            msg = consumer.poll(0.5)
            err = msg.error() if msg is not None else None
            return err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        wait_until(refused, 30, "frames.raw refused to storage's principal")
    finally:
        consumer.close()
    raw = f"Topic:LITERAL:{storage.topic('frames.raw')}"
    wait_until(lambda: denials(secure_kafka, secure_site) == {
        ("User:storage", "WRITE", raw), ("User:storage", "READ", raw)}, 10,
        "the broker's record of both refusals, and of nothing else")


def refusal(conf: dict[str, Any]) -> set[int]:
    """The error codes a client with ``conf`` hears while its metadata request fails."""
    conf, errors = broker_errors(conf)
    admin = AdminClient({**conf, "socket.connection.setup.timeout.ms": 2000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    admin.poll(0.5)
    return {e.code() for e in errors}


def test_a_plaintext_client_is_refused_on_the_secured_listener(
        secure_kafka: KafkaCluster) -> None:
    AdminClient(secure_kafka.admin_config()).list_topics(timeout=10)  # the listener is up
    # a Kafka request where a TLS handshake is expected: the node closes the connection
    assert refusal({"bootstrap.servers": secure_kafka.bootstrap_servers}) == {
        KafkaError._ALL_BROKERS_DOWN}


@pytest.mark.parametrize(("change", "heard"), [
    ({"sasl.password": "guessed"}, KafkaError._AUTHENTICATION),
    ({"ssl.ca.location": None}, KafkaError._SSL),  # the system's CAs: the node is unknown
], ids=["wrong-password", "untrusted-node"])
def test_a_client_with_a_wrong_password_or_without_the_site_ca_is_refused(
        secure_kafka: KafkaCluster, change: dict[str, Any], heard: int) -> None:
    conf = {**secure_kafka.admin_config(), **change}
    assert heard in refusal({k: v for k, v in conf.items() if v is not None})


@pytest.mark.slow
def test_framewire_broker_starts_secured_and_the_tools_connect_as_admin(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    ensure_debian_packages(request.config, {"java": "default-jre-headless", "mvn": "maven"})
    home = tmp_path / "home"
    env = {"FRAMEWIRE_HOME": str(home), "FRAMEWIRE_BROKER": "kafka",
           "FRAMEWIRE_KAFKA_SECURITY": "sasl_ssl", "FRAMEWIRE_PARTITIONS": "2",
           "FRAMEWIRE_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port_block(2)}"}
    proc = start_broker_command(env, tmp_path / "broker.out")
    try:
        topics = framewire(env, "topics", "--json")
        assert topics.returncode == 0, topics.stdout + topics.stderr
        assert json.loads(topics.stdout)["ok"] is True
        status = json.loads(framewire(env, "status", "--json").stdout)
        broker = next(s for s in status if s["service"] == "broker")
        assert [(n["node_id"], n["alive"]) for n in broker["instances"]] == [(1, True)]
    finally:
        stop(proc)
    private = [home / "tls" / "ca-key.pem", home / "tls" / "node.pem",
               home / "kafka" / "node-1" / "server.properties",
               *(home / "secrets" / "kafka").glob("*.password")]
    assert len(private) == 8  # 3 + the passwords of admin and the four stages
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in private} == {"0o600"}
    # data formatted secured is not started plaintext: its only admin is a SCRAM user
    plain = framewire({**env, "FRAMEWIRE_KAFKA_SECURITY": "plaintext"}, "broker")
    assert plain.returncode == 2
    assert "FRAMEWIRE_KAFKA_SECURITY=sasl_ssl" in "".join((plain.stdout + plain.stderr).split())


@pytest.mark.parametrize("delivery", [
    "at_least_once", pytest.param("exactly_once", marks=pytest.mark.slow)])
def test_analytics_runs_over_tls_and_scram_as_its_own_principal(
        secure_kafka: KafkaCluster, secure_site: Site, delivery: str) -> None:
    settings = configure(secure_site, ["cam-tls"], delivery)
    consumer = events_consumer(settings)  # as admin, before its password leaves the home
    # the worker gets no admin password: faust's client and its own topics' creation, its
    # group and its heartbeats all go as the analytics principal
    KafkaSecurity(secure_site.home).password_path(ADMIN).unlink()
    secure_site.start("analytics")
    frames = results("cam-tls")
    publish(as_principal(secure_site, "inference"), frames)  # inference writes detections
    want = {e.event_id for e in expected(settings, frames)}
    seen: list[AnalyticsEvent] = []
    try:
        wait_until(lambda: (read_events(settings, seen, consumer) or
                            {e.event_id for e in seen} >= want) or
                   not secure_site.alive("analytics") and pytest.fail(secure_site.logs()),
                   90, "the events of every frame on the events topic")
    finally:
        consumer.close()
    assert {e.event_id for e in seen} == want
    assert Counter(e.direction for e in seen if e.type == "line_cross") == {"in": 1, "out": 1}
    # faust's changelog and leader topic were made by the analytics principal
    group = settings.group("analytics")
    topics = AdminClient(secure_kafka.admin_config()).list_topics(timeout=10).topics
    assert {f"{group}-state-changelog", f"{group}-__assignor-__leader"} <= set(topics)
    assert secure_site.alive("analytics")
    assert denials(secure_kafka, secure_site) == set()
