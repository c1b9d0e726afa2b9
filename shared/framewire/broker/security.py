"""TLS and SASL/SCRAM for the Apache Kafka cluster Framewire manages (``kafka_security``).

With ``sasl_ssl``, clients reach the nodes only through a SASL_SSL listener and authenticate
with SCRAM-SHA-512. Every stage connects as a principal of its own (its name); ``admin`` is
Framewire's tooling (``framewire run``, ``status``, ``topics``...) and the super user.
ACLs (Kafka's StandardAuthorizer) let a stage read its input topic with its group, write its
outputs, dead letters and heartbeats, and describe the site's topics; beyond that only what
its declaration names (``follows``, ``manages``, ``reads``, ``writes``, ``replays``,
``internal_topics``: a stream library's own topics by name, e.g. faust's changelog). The nodes
talk to their controller quorum over mutual TLS, as the super user the node certificate
names.

Everything secret stays under ``FRAMEWIRE_HOME``, folders 0700 and files 0600: the CA and
the node certificate in ``tls/``, one password file per principal in ``secrets/kafka/``.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from framewire.errors import ConfigError, TransientError
from framewire.topology import topology

if TYPE_CHECKING:
    from confluent_kafka.admin import AclBinding, AdminClient

    from framewire.config import Settings

log = logging.getLogger(__name__)

MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
ADMIN = "admin"
# the principal the node certificate gives on the controller listener (mutual TLS)
NODE_PRINCIPAL = "CN=framewire-kafka-node"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
CA_DAYS, NODE_DAYS, RENEW_DAYS = 3650, 397, 30


def write_private(path: Path, data: bytes | str, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` readable by its owner only (0600, folder 0700).

    With ``exclusive`` an existing file is kept (another process made it first): returns
    whether this call wrote the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    raw = data.encode() if isinstance(data, str) else data
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        if not exclusive:
            os.replace(temp, path)
            return True
        try:
            os.link(temp, path)  # fails when the file exists: the first writer wins
        except FileExistsError:
            return False
        return True
    finally:
        temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class KafkaSecurity:
    """The CA, node certificate and SCRAM passwords of the secured cluster of ``home``."""

    home: Path

    @property
    def tls_dir(self) -> Path:
        return self.home.resolve() / "tls"

    @property
    def ca_path(self) -> Path:
        """The CA certificate clients trust (``ssl.ca.location``)."""
        return self.tls_dir / "ca.pem"

    @property
    def node_keystore(self) -> Path:
        """The nodes' private key and certificate chain, a PEM key store."""
        return self.tls_dir / "node.pem"

    def password_path(self, principal: str) -> Path:
        return self.home.resolve() / "secrets" / "kafka" / f"{principal}.password"

    def password(self, principal: str) -> str:
        """The SCRAM password of ``principal``; ConfigError when it was never made."""
        try:
            return self.password_path(principal).read_text().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"no Kafka password for principal {principal!r} in "
                f"{self.password_path(principal).parent}: the secured cluster makes them when "
                "it starts (framewire run or framewire broker with this FRAMEWIRE_HOME); set "
                "FRAMEWIRE_HOME to that site's home") from None

    def ensure_password(self, principal: str) -> tuple[str, bool]:
        """``principal``'s password, generated when missing; and whether it is new."""
        path = self.password_path(principal)
        created = not path.exists() and write_private(path, secrets.token_urlsafe(32),
                                                      exclusive=True)
        return self.password(principal), created

    def prepare(self, hosts: Iterable[str]) -> None:
        """What the nodes need before they start: certificates and the admin's password."""
        self.ensure_certificates(hosts)
        self.ensure_password(ADMIN)

    # -- certificates ----------------------------------------------------------------------

    def ensure_certificates(self, hosts: Iterable[str]) -> None:
        """A CA (made once) and a node certificate valid for ``hosts``, this host's name and
        loopback; the node certificate is made again when a host is missing or it expires
        within RENEW_DAYS."""
        names = sorted({*hosts, "localhost", "127.0.0.1", socket.gethostname()})
        ca_key_path = self.tls_dir / "ca-key.pem"
        if not (self.ca_path.exists() and ca_key_path.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(_name("Framewire Kafka CA"), key.public_key(), key,
                                _name("Framewire Kafka CA"), CA_DAYS, ca=True)
            write_private(ca_key_path, _private_pem(key))
            write_private(self.ca_path, cert.public_bytes(serialization.Encoding.PEM))
            self.node_keystore.unlink(missing_ok=True)
            log.info("Kafka CA created", extra={"ca": str(self.ca_path)})
        if self._node_certificate_fits(names):
            return
        ca_cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{ca_key_path} is not the EC key Framewire made; remove "
                              f"{self.tls_dir} to make a new CA (clients must trust it again)")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(x509.Name.from_rfc4514_string(NODE_PRINCIPAL), key.public_key(),
                            ca_key, ca_cert.subject, NODE_DAYS, names=names)
        write_private(self.node_keystore, _private_pem(key)
                      + cert.public_bytes(serialization.Encoding.PEM)
                      + ca_cert.public_bytes(serialization.Encoding.PEM))
        log.info("Kafka node certificate created", extra={"names": names})

    def _node_certificate_fits(self, names: list[str]) -> bool:
        if not self.node_keystore.exists():
            return False
        cert = x509.load_pem_x509_certificate(self.node_keystore.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = {str(n) for n in sans.get_values_for_type(x509.IPAddress)}
        covered |= set(sans.get_values_for_type(x509.DNSName))
        renew_at = cert.not_valid_after_utc - datetime.timedelta(days=RENEW_DAYS)
        return set(names) <= covered and datetime.datetime.now(datetime.UTC) < renew_at

    # -- the nodes' and the clients' properties --------------------------------------------

    def node_properties(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """``server.properties`` entries of a secured node (they replace the plaintext
        listeners): clients and replication on SASL_SSL, the quorum on mutual TLS."""
        jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN}" password="{self.password(ADMIN)}";')
        return {
            "listeners": f"CLIENT://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"CLIENT://{host}:{port}",
            "listener.security.protocol.map": "CLIENT:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "CLIENT",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.client.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.node_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_path),
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:{ADMIN};User:{NODE_PRINCIPAL}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_arguments(self) -> list[str]:
        """The storage tool's ``--add-scram`` for ``admin``: the one user that must exist
        before the cluster can authenticate anyone (the stages' are added through it)."""
        password, _ = self.ensure_password(ADMIN)
        return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={password}]"]

    def client_properties(self, principal: str) -> dict[str, str]:
        """librdkafka properties of a client connecting as ``principal``."""
        return {"security.protocol": "SASL_SSL", "sasl.mechanisms": MECHANISM,
                "sasl.username": principal, "sasl.password": self.password(principal),
                "ssl.ca.location": str(self.ca_path)}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # unencrypted PKCS#8: the form Kafka's PEM key store reads without ssl.key.password
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 signer: ec.EllipticCurvePrivateKey, issuer: x509.Name, days: int,
                 ca: bool = False, names: list[str] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                              critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        sans: list[x509.GeneralName] = []
        for name in names or []:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        # the node serves clients and is a client of its quorum peers
        builder = (builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False))
    return builder.sign(signer, hashes.SHA256())


# -- principals and ACLs -------------------------------------------------------------------


def acl_bindings(settings: Settings) -> list[AclBinding]:
    """What each stage's principal may do on the site's topics, groups and transactions."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    site = topology(settings)
    topics = [settings.topic(name) for name in site.topics]
    system = [settings.topic(name) for name, info in site.topics.items() if info.system]
    bindings = []
    for spec in site.stages:
        user = f"User:{spec.name}"

        def allow(kind: ResourceType, name: str, operation: AclOperation,
                  pattern: ResourcePatternType = ResourcePatternType.LITERAL,
                  user: str = user) -> None:
            bindings.append(AclBinding(kind, name, pattern, user, "*", operation,
                                       AclPermissionType.ALLOW))

        # metadata, end offsets and configs of every topic: lag, partition counts and the
        # drift check after an outage; no records
        for topic in topics:
            allow(ResourceType.TOPIC, topic, AclOperation.DESCRIBE)
            allow(ResourceType.TOPIC, topic, AclOperation.DESCRIBE_CONFIGS)
        if spec.input is not None:
            allow(ResourceType.TOPIC, settings.topic(spec.input), AclOperation.READ)
            allow(ResourceType.GROUP, settings.group(spec.name), AclOperation.READ)
        # settings topics: read whole by a follower of its own, written by those managing them
        for name in sorted({*spec.follows, *spec.manages}):
            allow(ResourceType.TOPIC, settings.topic(name), AclOperation.READ)
        if spec.follows or spec.manages:
            allow(ResourceType.GROUP, f"{settings.group(spec.name)}-follow-", AclOperation.READ,
                  ResourcePatternType.PREFIXED)
        for name in spec.manages:
            allow(ResourceType.TOPIC, settings.topic(name), AclOperation.WRITE)
        # topics read whole with no group (assigned from explicit offsets: no group ACL)
        for name in spec.reads:
            allow(ResourceType.TOPIC, settings.topic(name), AclOperation.READ)
        # a replay re-publishes each letter to the topic it was read from: a stage's input
        replayed = [c.input for c in site.consumers if c.input is not None] \
            if spec.replays else []
        written = dict.fromkeys([*(o.topic for o in spec.outputs), *spec.writes, *replayed])
        for topic in [*(settings.topic(name) for name in written), *system]:
            allow(ResourceType.TOPIC, topic, AclOperation.WRITE)
        # topics a stage's own loop keeps (faust-streaming's table changelog and leader
        # topic), each named after its group: it creates them at start, then reads and writes
        # them; those names only, not every topic its group's name begins
        for suffix in spec.internal_topics:
            for operation in (AclOperation.CREATE, AclOperation.DESCRIBE, AclOperation.READ,
                              AclOperation.WRITE):
                allow(ResourceType.TOPIC, f"{settings.group(spec.name)}-{suffix}", operation)
        # exactly_once: the stage's transactional ids start with its group's name
        allow(ResourceType.TRANSACTIONAL_ID, f"{settings.group(spec.name)}-",
              AclOperation.WRITE, ResourcePatternType.PREFIXED)
        if spec.is_source:  # a source watches the lag of every group to know it is behind
            for consumer in site.consumers:
                allow(ResourceType.GROUP, settings.group(consumer.name), AclOperation.DESCRIBE)
    return bindings


def ensure_access(settings: Settings, admin: AdminClient, timeout_s: float = 30.0) -> None:
    """Make each stage's SCRAM user (password generated under home when new) and its ACLs;
    the admin client must be ``admin``'s. Existing users and ACLs are left as they are."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    security = KafkaSecurity(settings.home)
    users = [spec.name for spec in topology(settings).stages]
    try:
        known = admin.describe_user_scram_credentials(users, request_timeout=timeout_s)
        assert isinstance(known, dict)  # one future per user named
        upserts: list[UserScramCredentialAlteration] = []
        for user in users:
            password, new = security.ensure_password(user)
            try:
                known[user].result(timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                    raise
                new = True
            if new:  # a password made here, or a user the cluster does not know yet
                upserts.append(UserScramCredentialUpsertion(
                    user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                    password.encode()))
        if upserts:
            for future in admin.alter_user_scram_credentials(
                    upserts, request_timeout=timeout_s).values():
                future.result(timeout_s)
            log.info("Kafka principals created", extra={"users": [u.user for u in upserts]})
        for future in admin.create_acls(acl_bindings(settings),
                                        request_timeout=timeout_s).values():
            future.result(timeout_s)
    except KafkaException as exc:
        raise TransientError(f"could not set up the Kafka principals and ACLs of the site "
                             f"({exc}); the client must connect as {ADMIN}") from exc


def client_security(settings: Settings) -> dict[str, Any]:
    """The TLS and SASL properties of this process's clients on a secured managed cluster:
    its own principal (``kafka_principal``; ``admin`` for Framewire's tooling)."""
    if settings.kafka_security != "sasl_ssl":
        return {}
    return KafkaSecurity(settings.home).client_properties(settings.kafka_principal or ADMIN)
