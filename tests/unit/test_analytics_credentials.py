"""The analytics service's Kafka client (faust-streaming over aiokafka) on a secured cluster,
without a broker: the librdkafka properties every other client gets, mapped to faust's
``broker_credentials``; what cannot be mapped refused by name; the ACLs of faust's topics."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from cryptography import x509
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from framewire.analytics.app import faust_options
from framewire.analytics.credentials import broker_credentials, credentials_from
from framewire.broker.security import KafkaSecurity, acl_bindings
from framewire.config import Settings, load_settings
from framewire.errors import ConfigError


def secured(home: Path, **overrides: Any) -> Settings:
    """The analytics worker's settings on a managed kafka_security=sasl_ssl cluster."""
    security = KafkaSecurity(home)
    security.prepare(["127.0.0.1"])
    security.ensure_password("analytics")
    return load_settings(home=home, broker="kafka", kafka_security="sasl_ssl",
                         kafka_principal="analytics", **overrides)


def ca_names(context: ssl.SSLContext) -> set[str]:
    return {x509.load_der_x509_certificate(der).subject.rfc4514_string()
            for der in context.get_ca_certs(binary_form=True)}


def test_analytics_connects_with_scram_as_its_principal_trusting_the_site_ca(
        tmp_path: Path) -> None:
    settings = secured(tmp_path)
    credentials = faust_options(settings, 4, 1)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)  # what faust hands aiokafka
    assert {k: auth[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                                 "sasl_plain_password")} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "analytics",
        "sasl_plain_password": KafkaSecurity(tmp_path).password("analytics")}
    context = auth["ssl_context"]
    assert ca_names(context) == {"CN=Framewire Kafka CA"}  # the site's CA only
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert "password" not in repr(credentials)


def test_a_plaintext_site_gives_faust_no_credentials(tmp_path: Path) -> None:
    assert "broker_credentials" not in faust_options(load_settings(home=tmp_path), 4, 1)
    # librdkafka ignores TLS and SASL properties on plaintext: so does the mapping
    assert broker_credentials(load_settings(home=tmp_path, kafka={
        "security.protocol": "plaintext", "sasl.oauthbearer.method": "oidc"})) is None


def test_the_users_librdkafka_properties_are_followed_and_win(tmp_path: Path) -> None:
    theirs = KafkaSecurity(tmp_path / "other")
    theirs.ensure_certificates(["127.0.0.1"])
    ca = theirs.ca_path
    # their own cluster: SCRAM-SHA-256, a secret password, their CA, no host name check
    own = load_settings(home=tmp_path, kafka={
        "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "faust", "sasl.password": "s3cret", "ssl.ca.location": str(ca),
        "ssl.endpoint.identification.algorithm": "none", "session.timeout.ms": 6000})
    credentials = broker_credentials(own)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value) == (
        "faust", "s3cret", "SCRAM-SHA-256")
    assert credentials.ssl_context is not None and not credentials.ssl_context.check_hostname
    # over kafka_security's: sasl.mechanism is sasl.mechanisms' alias, the later one wins
    managed = broker_credentials(secured(tmp_path / "site", kafka={
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "me"}))
    assert isinstance(managed, faust.SASLCredentials)
    assert (managed.mechanism.value, managed.username) == ("SCRAM-SHA-256", "me")
    # SASL without TLS, and TLS without SASL (system CAs, none named)
    plain = credentials_from({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
                              "sasl.username": "u", "sasl.password": "p"})
    assert credentials_to_aiokafka_auth(plain)["security_protocol"] == "SASL_PLAINTEXT"
    tls = credentials_from({"security.protocol": "SSL"})
    assert isinstance(tls, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(tls)["security_protocol"] == "SSL"


@pytest.mark.parametrize(("conf", "says"), [
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "sasl.mechanism = GSSAPI"),
    ({"security.protocol": "SASL_SSL"}, "sasl.mechanism = GSSAPI"),  # librdkafka's default
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
      "sasl.oauthbearer.method": "oidc"}, "kafka.sasl.oauthbearer.method"),
    ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"},
     "kafka.ssl.keystore.location"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
      "sasl.username": "u"}, "kafka.sasl.password is not set"),
    ({"security.protocol": "SSL", "ssl.ca.location": "/nowhere/ca.pem"}, "/nowhere/ca.pem"),
    ({"security.protocol": "TLS"}, "kafka.security.protocol = 'TLS'"),
], ids=["gssapi", "default-gssapi", "oauth", "pkcs12", "no-password", "missing-ca",
        "unknown-protocol"])
def test_what_aiokafka_cannot_follow_is_refused_naming_the_property(
        conf: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        credentials_from(conf)


def test_analytics_may_create_read_and_write_only_its_own_faust_topics() -> None:
    settings = load_settings(topic_prefix="s1.")
    # <group>-state-changelog and <group>-__assignor-__leader: faust's changelog and leader,
    # by name (no topic is granted by a prefix)
    assert not any(b.restype == ResourceType.TOPIC
                   and b.resource_pattern_type == ResourcePatternType.PREFIXED
                   for b in acl_bindings(settings))
    created = {(b.principal, b.name) for b in acl_bindings(settings)
               if b.operation == AclOperation.CREATE}
    assert created == {("User:analytics", "s1.framewire-analytics-state-changelog"),
                       ("User:analytics", "s1.framewire-analytics-__assignor-__leader")}
    # its group (faust's app id) and exactly_once's transactional ids, as any stage's
    analytics = {(b.restype, b.name, b.operation) for b in acl_bindings(settings)
                 if b.principal == "User:analytics"}
    assert {(ResourceType.GROUP, "s1.framewire-analytics", AclOperation.READ),
            (ResourceType.TRANSACTIONAL_ID, "s1.framewire-analytics-",
             AclOperation.WRITE)} <= analytics
