"""TLS and SASL/SCRAM for the managed Apache Kafka cluster, without a broker: certificates,
passwords, node and client properties, each stage's ACLs; schema registry auth."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from confluent_kafka.schema_registry import SchemaRegistryError
from cryptography import x509

from framewire.broker.client import client_config
from framewire.broker.cluster import KafkaCluster
from framewire.broker.security import ADMIN, NODE_PRINCIPAL, KafkaSecurity, acl_bindings
from framewire.config import load_settings
from framewire.contracts import DeadLetter, FrameCaptured, utcnow
from framewire.contracts.codec import RegistryCodec, make_codec
from framewire.errors import ConfigError
from framewire.topology import Output, StageSpec, topology
from framewire.topology.registry import check


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ({str(n) for n in names.get_values_for_type(x509.IPAddress)}
            | set(names.get_values_for_type(x509.DNSName)))


def test_ca_and_node_certificate_are_made_once_private_and_cover_the_node_hosts(
        tmp_path: Path) -> None:
    security = KafkaSecurity(tmp_path)
    security.prepare(["127.0.0.1", "kafka-1.example"])
    tls = tmp_path / "tls"
    assert mode(tls) == 0o700
    assert {p.name: mode(p) for p in tls.iterdir()} == {
        "ca.pem": 0o600, "ca-key.pem": 0o600, "node.pem": 0o600}
    assert mode(security.password_path(ADMIN)) == 0o600
    assert {"127.0.0.1", "kafka-1.example", "localhost"} <= sans(security.node_keystore)
    node = x509.load_pem_x509_certificate(security.node_keystore.read_bytes())
    ca = x509.load_pem_x509_certificate(security.ca_path.read_bytes())
    node.verify_directly_issued_by(ca)
    assert node.subject.rfc4514_string() == NODE_PRINCIPAL
    # the PEM key store Kafka reads: an unencrypted PKCS#8 key, then the chain
    assert security.node_keystore.read_text().startswith("-----BEGIN PRIVATE KEY-----")

    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    password = security.password(ADMIN)
    security.prepare(["127.0.0.1", "kafka-1.example"])
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == before
    assert security.password(ADMIN) == password

    security.prepare(["10.0.0.7"])  # a host the certificate does not name: a new one, same CA
    assert "10.0.0.7" in sans(security.node_keystore)
    assert security.ca_path.read_bytes() == before["ca.pem"]


def test_a_secured_node_has_no_plaintext_listener_and_runs_the_standard_authorizer(
        tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, "127.0.0.1", 19092, 1, security=KafkaSecurity(tmp_path))
    cluster.security.prepare(["127.0.0.1"])  # type: ignore[union-attr]
    props = cluster.properties(cluster.node(1))
    assert props["listeners"] == "CLIENT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,CONTROLLER:SSL"
    assert "PLAINTEXT" not in str(props)
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == f"User:{ADMIN};User:{NODE_PRINCIPAL}"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert cluster.admin_config()["sasl.username"] == ADMIN


def test_clients_connect_with_the_standard_librdkafka_settings_as_their_own_principal(
        tmp_path: Path) -> None:
    security = KafkaSecurity(tmp_path)
    security.prepare(["127.0.0.1"])
    storage_password, _ = security.ensure_password("storage")
    settings = load_settings(home=tmp_path, broker="kafka", kafka_security="sasl_ssl")
    tooling = client_config(settings)
    assert {k: tooling[k] for k in ("security.protocol", "sasl.mechanisms", "sasl.username",
                                    "ssl.ca.location")} == {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": ADMIN, "ssl.ca.location": str(security.ca_path)}
    storage = client_config(settings.model_copy(update={"kafka_principal": "storage"}))
    assert (storage["sasl.username"], storage["sasl.password"]) == ("storage", storage_password)
    # the user's own librdkafka settings still win
    assert client_config(settings.model_copy(update={"kafka": {"ssl.ca.location": "/ca"}})
                         )["ssl.ca.location"] == "/ca"
    assert "security.protocol" not in client_config(load_settings(home=tmp_path))


def test_a_principal_without_a_password_is_refused_naming_where_passwords_live(
        tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, broker="kafka", kafka_security="sasl_ssl",
                             kafka_principal="storage")
    with pytest.raises(ConfigError, match="secrets/kafka"):
        client_config(settings)


def test_kafka_security_applies_only_to_the_managed_cluster() -> None:
    with pytest.raises(ConfigError, match="security.protocol"):
        load_settings(kafka_security="sasl_ssl")  # the embedded broker
    with pytest.raises(ConfigError, match="your own"):
        load_settings(broker="kafka", embedded_broker=False, kafka_security="sasl_ssl")


def granted(settings, user: str) -> dict[str, set[str]]:  # noqa: ANN001
    """Operation name -> topics (or groups, ids) the user is allowed it on."""
    out: dict[str, set[str]] = {}
    for b in acl_bindings(settings):
        if b.principal == f"User:{user}":
            kind = {ResourceType.TOPIC: "", ResourceType.GROUP: "group:",
                    ResourceType.TRANSACTIONAL_ID: "txn:"}[b.restype]
            out.setdefault(b.operation.name, set()).add(kind + b.name)
    return out


def test_each_stage_may_read_only_its_input_and_write_only_its_outputs() -> None:
    settings = load_settings(topic_prefix="s1.")
    storage = granted(settings, "storage")
    # and the cameras topic, for the retention of cameras added at run time (its sweeper)
    assert storage["READ"] == {"s1.detections", "group:s1.framewire-storage", "s1.cameras",
                               "group:s1.framewire-storage-follow-"}
    assert storage["WRITE"] == {"s1.deadletter", "s1.status", "txn:s1.framewire-storage-"}
    events = granted(settings, "event_storage")
    assert events["READ"] == {"s1.events", "group:s1.framewire-event_storage"}
    assert events["WRITE"] == {"s1.deadletter", "s1.status", "txn:s1.framewire-event_storage-"}
    ingest = granted(settings, "ingest")
    # ingest reads the cameras settings topic only, with a follower group of its own
    assert ingest["READ"] == {"s1.cameras", "group:s1.framewire-ingest-follow-"}
    assert ingest["WRITE"] == {"s1.frames.raw", "s1.deadletter", "s1.status",
                               "txn:s1.framewire-ingest-"}
    # ingest watches every group's lag; DESCRIBE reads no record
    assert {g for g in ingest["DESCRIBE"] if g.startswith("group:")} == {
        "group:s1.framewire-preprocess", "group:s1.framewire-inference",
        "group:s1.framewire-analytics", "group:s1.framewire-storage",
        "group:s1.framewire-event_storage", "group:s1.framewire-alert_storage"}
    preprocess = granted(settings, "preprocess")
    # and the control topic (the model it letterboxes for), with a follower group of its own
    assert preprocess["READ"] == {"s1.frames.raw", "group:s1.framewire-preprocess", "s1.control",
                                  "group:s1.framewire-preprocess-follow-"}
    assert "s1.frames.ready" in preprocess["WRITE"]
    # creating topics: only analytics, its faust topics (test_analytics_credentials.py)
    assert not any(b.operation in (AclOperation.ALL, AclOperation.ALTER, AclOperation.CREATE,
                                   AclOperation.DELETE) for b in acl_bindings(settings)
                   if b.principal != "User:analytics")


def test_the_gateway_may_do_what_its_routes_do_and_nothing_more() -> None:
    settings = load_settings(topic_prefix="s1.")
    gateway = granted(settings, "gateway")
    # dead letters and heartbeats read whole, from explicit offsets (no group); the cameras
    # topic followed (privacy mode of pushed frames) with a follower group of its own
    # and frames.raw's retained range for a reprocess job, the control topic it manages
    assert gateway["READ"] == {"s1.deadletter", "s1.status", "s1.cameras", "s1.frames.raw",
                               "s1.control", "group:s1.framewire-gateway-follow-"}
    # pushed frames (frames.raw), a replay's targets (every stage's input), camera changes
    assert gateway["WRITE"] == {"s1.frames.raw", "s1.frames.ready", "s1.detections",
                                "s1.events", "s1.alerts", "s1.cameras", "s1.control",
                                "s1.deadletter", "s1.status", "txn:s1.framewire-gateway-"}
    # it pushes frames as ingest does, so it watches the pipeline's lag (back-pressure)
    assert {g for g in gateway["DESCRIBE"] if g.startswith("group:")} == {
        "group:s1.framewire-preprocess", "group:s1.framewire-inference",
        "group:s1.framewire-analytics", "group:s1.framewire-storage",
        "group:s1.framewire-event_storage", "group:s1.framewire-alert_storage"}
    # ingest stays the one declared writer of frames.raw; the gateway writes it beside
    site = topology(settings)
    assert site.topic("frames.raw").writers == ("ingest",)
    assert site.topic("cameras").writers == ("gateway",)
    assert set(site.topic("cameras").readers) >= {"ingest", "gateway"}


def test_reads_and_writes_must_name_a_topic_of_the_site() -> None:
    source = StageSpec(name="src", summary="s", entry="x:src",
                       outputs=(Output("frames.raw", FrameCaptured),))
    for field in ("reads", "writes"):
        with pytest.raises(ConfigError, match=f"{field} 'frames.nowhere', which no stage"):
            check([source, StageSpec(name="api", summary="a", entry="x:a",
                                     **{field: ("frames.nowhere",)})])
        with pytest.raises(ConfigError, match="goes in follows or manages"):
            check([source, StageSpec(name="api", summary="a", entry="x:a",
                                     **{field: ("cameras",)})])
    check([source, StageSpec(name="api", summary="a", entry="x:a", reads=("deadletter",),
                             writes=("frames.raw",))])


def test_the_registry_client_sends_basic_auth_from_schema_registry_auth(
        schema_registry) -> None:  # noqa: ANN001
    schema_registry.user_info = "framewire:s3cret"
    url = f"http://127.0.0.1:{schema_registry.server_port}"
    settings = load_settings(schema_registry_url=url,
                             schema_registry_auth={"basic.auth.user.info": "framewire:s3cret"})
    assert "s3cret" not in repr(settings.schema_registry_auth)
    record = DeadLetter(service="storage", code="db_rejected", reason="x", failed_at=utcnow(),
                        source_topic="detections", source_partition=0, source_offset=1,
                        camera_id="cam-1", payload=None)
    codec = make_codec(settings.schema_registry_url, settings.schema_registry_auth)
    assert codec.decode(codec.encode(record), DeadLetter) == record
    with pytest.raises(SchemaRegistryError):
        RegistryCodec(url).encode(record)
    with pytest.raises(ConfigError, match="schema_registry_auth"):
        RegistryCodec(url, auth={"basic.auth.user.info": "no-colon"})


def test_a_stage_keeping_topics_of_its_own_gets_them_by_name_only() -> None:
    settings = load_settings(topic_prefix="s1.")
    analytics = granted(settings, "analytics")
    faust = {"s1.framewire-analytics-state-changelog", "s1.framewire-analytics-__assignor-__leader"}
    assert analytics["CREATE"] == faust
    for operation in ("DESCRIBE", "READ", "WRITE"):
        assert faust <= analytics[operation]
    # not another topic its group's name begins, as a prefixed binding would allow
    assert not {t for op in ("CREATE", "READ", "WRITE") for t in analytics[op]
                if t.startswith("s1.framewire-analytics-") and t not in faust}
    assert all(b.resource_pattern_type == ResourcePatternType.LITERAL
               for b in acl_bindings(settings)
               if b.principal == "User:analytics" and b.restype == ResourceType.TOPIC)
