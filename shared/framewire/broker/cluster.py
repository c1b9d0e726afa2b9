"""Apache Kafka managed by Framewire: a KRaft cluster of 1 to 9 nodes on this host.

Each node is both broker and controller (``process.roles=broker,controller``), runs Apache
Kafka's own jars on the system's Java, and keeps its log under ``FRAMEWIRE_HOME/kafka``, so
a restart keeps every topic. Node N listens for clients on the bootstrap port + N - 1 and
for its controller quorum on the bootstrap port + nodes + N - 1.

With ``security`` (``kafka_security=sasl_ssl``) clients reach the nodes over TLS with
SASL/SCRAM and ACLs apply (``framewire.broker.security``).

The jars are resolved once with Maven from ``infra/kafka/pom.xml`` into a cache folder
(``FRAMEWIRE_KAFKA_JARS`` to use a folder you filled yourself).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from framewire.broker.security import ADMIN, KafkaSecurity, write_private
from framewire.errors import ConfigError, TransientError
from framewire.procutil import die_with_parent

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parents[3] / "infra" / "kafka" / "pom.xml"
MAVEN_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 30.0
# a node's metadata log and group state make the cluster's own topics; small partition counts
# keep start-up and the controllers' work low on a laptop-sized host
INTERNAL_TOPIC_PARTITIONS = 12
LOG4J_CONFIG = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
"""


def jar_cache() -> Path:
    """Where the resolved jars live: ``FRAMEWIRE_KAFKA_JARS``, else a cache keyed by the POM."""
    configured = os.environ.get("FRAMEWIRE_KAFKA_JARS")
    if configured:
        return Path(configured)
    digest = hashlib.sha256(pom_path().read_bytes()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "framewire" / f"kafka-{digest}"


def pom_path() -> Path:
    path = Path(os.environ.get("FRAMEWIRE_KAFKA_POM") or POM)
    if not path.is_file():
        raise ConfigError(f"the Apache Kafka POM {path} is missing; run framewire from a "
                          "checkout of the project, or set FRAMEWIRE_KAFKA_JARS to a folder "
                          "holding Apache Kafka's jars")
    return path


def resolve_jars() -> Path:
    """The folder of Apache Kafka's jars, resolving them with Maven the first time."""
    folder = jar_cache()
    stamp = folder / ".complete"
    if stamp.exists() or (os.environ.get("FRAMEWIRE_KAFKA_JARS") and any(folder.glob("*.jar"))):
        return folder
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError("Apache Kafka's jars are resolved with Maven, which is not installed: "
                          "run `make install` (it installs maven and default-jre-headless) or "
                          "`apt-get install -y maven`")
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving the same cache
        if stamp.exists():
            return folder
        log.warning("resolving Apache Kafka's jars with Maven (once)", extra={"into": str(folder)})
        cmd = [mvn, "-q", "-B", "-f", str(pom_path()), "dependency:copy-dependencies",
               f"-DoutputDirectory={folder}", "-DincludeScope=runtime"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S)
        if done.returncode != 0:
            raise TransientError(f"Maven could not resolve Apache Kafka's jars (exit "
                                 f"{done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
        stamp.touch()
    return folder


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise ConfigError("Apache Kafka needs Java 17+: run `make install` (it installs "
                          "default-jre-headless) or `apt-get install -y default-jre-headless`")
    return java


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, not starting
    with "-" (the storage tool would take it for an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaNode:
    """One KRaft node (broker and controller) of the cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int
    folder: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def listener(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class KafkaCluster:
    """A KRaft cluster of ``nodes`` nodes on ``host``, data under ``home / "kafka"``."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 19092
    nodes: int = 1
    heap_mb: int = 512
    log_dir: Path | None = None
    # TLS and SASL/SCRAM listeners with ACLs (kafka_security=sasl_ssl); None = plaintext
    security: KafkaSecurity | None = None
    members: list[KafkaNode] = field(init=False)

    def __post_init__(self) -> None:
        self.folder = self.home.resolve() / "kafka"
        logs = self.log_dir or self.home / "logs"
        self.members = [
            KafkaNode(i, self.host, self.port + i - 1, self.port + self.nodes + i - 1,
                      self.folder / f"node-{i}",
                      logs / ("broker.log" if self.nodes == 1 else f"broker-{i}.log"))
            for i in range(1, self.nodes + 1)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.listener for n in self.members)

    def node(self, node_id: int) -> KafkaNode:
        return self.members[node_id - 1]

    def admin_config(self) -> dict[str, Any]:
        """librdkafka properties reaching the cluster as its administrator (TLS and SCRAM
        when secured)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if self.security is not None:
            conf.update(self.security.client_properties(ADMIN))
        return conf

    # -- set-up ----------------------------------------------------------------------------

    def _cluster_id(self) -> str:
        """The id every node is formatted with; kept so a restart finds its data."""
        meta = self.folder / "cluster.json"
        security = "plaintext" if self.security is None else "sasl_ssl"
        if meta.exists():
            saved = json.loads(meta.read_text())
            if saved.get("nodes") != self.nodes:
                raise ConfigError(
                    f"the Apache Kafka data in {self.folder} belongs to a {saved.get('nodes')}-"
                    f"node cluster, not {self.nodes}: set FRAMEWIRE_BROKER_NODES="
                    f"{saved.get('nodes')}, or remove {self.folder} to start an empty cluster")
            # SCRAM's admin user is made when the data is formatted, so it cannot be added
            if saved.get("security", "plaintext") != security:
                raise ConfigError(
                    f"the Apache Kafka data in {self.folder} was made with kafka_security="
                    f"{saved.get('security', 'plaintext')}, not {security}: set "
                    f"FRAMEWIRE_KAFKA_SECURITY={saved.get('security', 'plaintext')}, or remove "
                    f"{self.folder} to start an empty cluster")
            return str(saved["cluster_id"])
        self.folder.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        meta.write_text(json.dumps({"cluster_id": cluster_id, "nodes": self.nodes,
                                    "security": security}))
        return cluster_id

    def properties(self, node: KafkaNode) -> dict[str, Any]:
        """``server.properties`` of one node."""
        replicas = min(3, self.nodes)
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.members)
        return {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{node.listener},CONTROLLER://{node.host}:"
                         f"{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{node.listener}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.folder / "data"),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": INTERNAL_TOPIC_PARTITIONS,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": max(1, replicas - 1),
            "transaction.state.log.num.partitions": INTERNAL_TOPIC_PARTITIONS,
            "group.initial.rebalance.delay.ms": 0,
            # frames up to 16 MiB travel inline (the producers' message.max.bytes)
            "message.max.bytes": 16 * 1024 * 1024 + 1024,
            "replica.fetch.max.bytes": 16 * 1024 * 1024 + 1024,
            # segments roll at 128 MiB so retention can free frames within hours, not days
            "log.segment.bytes": 128 * 1024 * 1024,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "unclean.leader.election.enable": "false",
            **(self.security.node_properties(node.host, node.port, node.controller_port)
               if self.security is not None else {}),
        }

    def _write_config(self, node: KafkaNode) -> Path:
        node.folder.mkdir(parents=True, exist_ok=True)
        path = node.folder / "server.properties"
        # secured, it holds the admin's password (inter-broker SCRAM): its owner's only
        write_private(path, "".join(f"{k}={v}\n" for k, v in self.properties(node).items()))
        (self.folder / "log4j2.properties").write_text(LOG4J_CONFIG)
        return path

    def _java(self, main: str, *args: str, heap_mb: int) -> list[str]:
        return [java_binary(), f"-Xms{min(heap_mb, 256)}m", f"-Xmx{heap_mb}m",
                # a few GC and compiler threads: three nodes share a laptop's cores
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:ParallelGCThreads=1",
                "-XX:ConcGCThreads=1", "-XX:CICompilerCount=2", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.folder / 'log4j2.properties'}",
                "-cp", str(resolve_jars() / "*"), main, *args]

    def _format(self, node: KafkaNode, config: Path, cluster_id: str) -> None:
        if (node.folder / "data" / "meta.properties").exists():
            return
        scram = self.security.format_arguments() if self.security is not None else []
        cmd = self._java("kafka.tools.StorageTool", "format", "--ignore-formatted",
                         "-t", cluster_id, "-c", str(config), *scram, heap_mb=256)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise TransientError(f"formatting Apache Kafka node {node.node_id} failed: "
                                 f"{(done.stdout + done.stderr)[-1500:]}")

    # -- running ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> None:
        """Start every node and wait until the cluster answers metadata with all of them."""
        cluster_id = self._cluster_id()
        if self.security is not None:
            self.security.prepare({n.host for n in self.members})
        for node in self.members:
            self._format(node, self._write_config(node), cluster_id)
        for node in self.members:
            self.launch(node)
        try:
            self.wait_ready(timeout_s)
        except Exception:
            self.stop()
            raise

    def launch(self, node: KafkaNode) -> None:
        config = self._write_config(node)
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the broker would export its own telemetry to an OTLP endpoint found in the environment
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        with node.log_path.open("ab") as out:
            node.process = subprocess.Popen(
                self._java("kafka.Kafka", str(config), heap_mb=self.heap_mb), stdout=out,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=die_with_parent)
        node.pid_file.write_text(str(node.process.pid))
        log.info("Apache Kafka node starting",
                 extra={"node": node.node_id, "pid": node.process.pid, "listener": node.listener})

    def wait_ready(self, timeout_s: float, nodes: list[KafkaNode] | None = None) -> None:
        """Block until each of ``nodes`` (default: all) answers and the cluster lists it."""
        waiting = list(nodes or self.members)
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while waiting:
            node = waiting[0]
            if node.process is not None and node.process.poll() is not None:
                raise TransientError(
                    f"Apache Kafka node {node.node_id} exited with code "
                    f"{node.process.returncode} while starting; is port {node.port} or "
                    f"{node.controller_port} in use? see {node.log_path}")
            try:
                metadata = AdminClient({**self.admin_config(), "bootstrap.servers":
                                        node.listener, "log_level": 0,
                                        "socket.connection.setup.timeout.ms": 1000}
                                       ).list_topics(timeout=1.0)
                everyone = nodes is not None or len(metadata.brokers) == self.nodes
                if node.node_id in metadata.brokers and everyone:
                    waiting.pop(0)
                    continue
                last = TransientError(f"cluster lists brokers {sorted(metadata.brokers)}")
            except KafkaException as exc:
                last = exc
            if time.monotonic() > deadline:
                raise TransientError(
                    f"Apache Kafka node {node.node_id} on {node.listener} was not ready within "
                    f"{timeout_s:.0f} s ({last}); see {node.log_path}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every node: SIGTERM to all at once (controlled shutdown), then SIGKILL."""
        self._stop(self.members, timeout_s)

    def stop_node(self, node_id: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._stop([self.node(node_id)], timeout_s)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        node = self.node(node_id)
        if node.alive:
            assert node.process is not None
            node.process.kill()
            node.process.wait()

    def start_node(self, node_id: int, timeout_s: float = 120.0) -> None:
        """(Re)start one node and wait until the cluster lists it again."""
        node = self.node(node_id)
        if not node.alive:
            self.launch(node)
        self.wait_ready(timeout_s, [node])

    def _stop(self, nodes: list[KafkaNode], timeout_s: float) -> None:
        for node in nodes:
            if node.alive:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in nodes:
            proc = node.process
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("Apache Kafka node did not stop in time; killing it",
                            extra={"node": node.node_id})
                proc.kill()
                proc.wait()
            node.process = None  # stopped on purpose: not a node to restart
            node.pid_file.unlink(missing_ok=True)

    def dead_nodes(self) -> list[KafkaNode]:
        """Nodes that were started and have exited since."""
        return [n for n in self.members if n.process is not None and n.process.poll() is not None]

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port_block(count: int, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """The first of ``count`` consecutive free TCP ports on ``host``, for a cluster's nodes.

    Chosen below the kernel's ephemeral range: a node restarted after a crash must find its
    port again, and meanwhile an ephemeral port may serve as a client connection's own.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(attempts):
        first = random.randrange(10_000, max(10_001, low - count))
        if all(_port_free(host, first + i) for i in range(count)):
            return first
    raise TransientError(f"no {count} consecutive free ports on {host} after {attempts} tries")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
