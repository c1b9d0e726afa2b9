"""``framewire run``: the broker (embedded or Apache Kafka) plus one OS process per service,
each restarted on crash."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from framewire.broker.client import (
    EmbeddedBroker,
    client_config,
    embedded_listen_host,
    ensure_topics,
    wait_for_broker,
)
from framewire.broker.cluster import KafkaCluster, KafkaNode
from framewire.broker.security import KafkaSecurity
from framewire.config import CRASH_LOOP_EXITS, CRASH_LOOP_WINDOW_S, Settings
from framewire.ops.logrotate import rotate_logs
from framewire.procutil import die_with_parent
from framewire.retry import Backoff
from framewire.topology import stage_settings, topology

log = logging.getLogger(__name__)
# how often the logs' sizes are checked for rotation
LOG_CHECK_S = 10.0


@dataclass
class Child:
    """One supervised service process."""

    service: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0))
    restart_at: float | None = None
    # when the process exited, within the crash-loop window
    exits: deque[float] = field(default_factory=deque)

    def exited(self, now: float) -> int:
        """Note an exit; how many exits the window holds."""
        self.exits.append(now)
        while self.exits and now - self.exits[0] > CRASH_LOOP_WINDOW_S:
            self.exits.popleft()
        return len(self.exits)


class Supervisor:
    """Starts the broker (when embedded) and the services; restarts a crashed service."""

    def __init__(self, settings: Settings, services: list[str], demo: bool = True,
                 replicas: dict[str, int] | None = None) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.logs = self.home / "logs"
        self.broker: EmbeddedBroker | None = None
        self.kafka: KafkaCluster | None = None
        self._node_restart_at: dict[int, float] = {}
        self._rotated_at = 0.0
        self.children = []
        site = topology(settings)
        self.sources = {s.name for s in site.sources}
        for name in services:
            spec = site.stage(name)
            args = [sys.executable, "-m", "framewire.cli", "service", name]
            if spec.is_source and demo:
                args.append("--demo")
            # a source runs once (two would publish every camera twice); a stage's replicas
            # setting gives its default count
            default = 1 if spec.is_source else getattr(stage_settings(settings, spec),
                                                        "replicas", 1)
            count = (replicas or {}).get(name, default)
            for i in range(count):
                log_name = f"{name}.log" if count == 1 else f"{name}-{i + 1}.log"
                self.children.append(Child(name, args, self.logs / log_name))

    def start(self) -> None:
        """Broker, topics, then every service."""
        # private to its user: camera frames, results and logs (an existing one keeps its mode)
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        host, _, port = self.settings.bootstrap_servers.split(",")[0].rpartition(":")
        if self.settings.on_tansu:
            self.broker = EmbeddedBroker(host, int(port), self.logs / "broker.log",
                                         listen_host=embedded_listen_host(self.settings))
            self.broker.start()
        elif self.settings.manages_kafka:
            self.kafka = managed_kafka(self.settings, self.logs)
            self.kafka.start()
            # services bootstrap from every node, so one node down never keeps them out
            self.settings = self.settings.model_copy(
                update={"bootstrap_servers": self.kafka.bootstrap_servers})
        else:
            wait_for_broker(client_config(self.settings), 30.0)
        ensure_topics(self.settings)
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        env = dict(os.environ, FRAMEWIRE_HOME=str(self.home),
                   FRAMEWIRE_RESTART_COUNT=str(child.restarts),
                   FRAMEWIRE_RECENT_CRASHES=str(len(child.exits)),
                   FRAMEWIRE_BOOTSTRAP_SERVERS=self.settings.bootstrap_servers)
        with child.log_path.open("ab") as out:
            child.process = subprocess.Popen(child.args, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True,
                                             preexec_fn=die_with_parent)
        child.restart_at = None
        log.info("service started", extra={"child": child.service, "pid": child.process.pid})

    def check(self) -> list[str]:
        """Restart services that exited (with backoff); returns messages about what happened."""
        events = []
        now = time.monotonic()
        if self.over_memory_budget() and self.recycle_broker():
            events.append("embedded broker recycled to stay within its memory budget "
                          "(drained first: nothing lost)")
        broker = self.broker
        if broker is not None and (broker.process is None or broker.process.poll() is not None):
            events.append("the embedded broker exited; restarting it (its data was in memory: "
                          "records not yet consumed are lost, see docs/operations.md)")
            broker.start()
            ensure_topics(self.settings)
        events += self._restart_kafka_nodes(now)
        if now - self._rotated_at > LOG_CHECK_S:
            self._rotated_at = now
            rotate_logs(self.logs, self.settings.log_max_mb * 1024 * 1024,
                        self.settings.log_backups)
        for child in self.children:
            proc = child.process
            if proc is not None and proc.poll() is None:
                continue
            if child.restart_at is None:
                code = proc.returncode if proc else None
                child.restart_at = now + child.backoff.next_delay()
                exits = child.exited(now)
                if exits >= CRASH_LOOP_EXITS:
                    events.append(
                        f"{child.service} is in a crash loop: exited {exits} times in "
                        f"{CRASH_LOOP_WINDOW_S / 60:.0f} minutes (last code {code}); a record "
                        "that kills it is dead-lettered as crash_loop after poison_pill_limit "
                        f"crashes; read {child.log_path}")
                else:
                    events.append(f"{child.service} exited with code {code}; restarting "
                                  f"(see {child.log_path})")
            elif now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
        return events

    def _restart_kafka_nodes(self, now: float) -> list[str]:
        """Start again, with backoff, Apache Kafka nodes that exited (their log is on disk)."""
        if self.kafka is None:
            return []
        events = []
        for node in self.kafka.dead_nodes():
            due = self._node_restart_at.get(node.node_id)
            if due is None:
                code = node.process.returncode if node.process else None
                delay = min(30.0, 2.0 ** min(node.restarts + 1, 5))
                self._node_restart_at[node.node_id] = now + delay
                events.append(f"Apache Kafka node {node.node_id} exited with code {code}; "
                              f"restarting it in {delay:.0f} s (its data is on disk; see "
                              f"{node.log_path})")
            elif now >= due:
                node.restarts += 1
                del self._node_restart_at[node.node_id]
                self.kafka.launch(node)
        return events

    @property
    def kafka_nodes(self) -> list[KafkaNode]:
        return self.kafka.members if self.kafka else []

    def stop_services(self, children: list[Child] | None = None) -> None:
        """SIGTERM services (they finish the batch, commit, leave) and wait for them."""
        children = self.children if children is None else children
        for child in children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service did not stop in time; killing it",
                            extra={"child": child.service})
                child.process.kill()
                child.process.wait()

    def stop(self) -> None:
        """Stop every service, then the broker."""
        self.stop_services()
        if self.broker is not None:
            self.broker.stop()
        if self.kafka is not None:
            self.kafka.stop()

    # -- keeping the embedded broker's memory within a budget -----------------------------

    def broker_rss_mb(self) -> float | None:
        """Resident memory of the embedded broker, in MiB (None when there is none)."""
        proc = self.broker.process if self.broker else None
        if proc is None or proc.poll() is not None:
            return None
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def over_memory_budget(self) -> bool:
        budget = self.settings.broker_memory_budget_mb
        if self.broker is None:  # Apache Kafka keeps its log on disk, within its heap
            return False
        rss = self.broker_rss_mb()
        return bool(budget) and rss is not None and rss > budget

    def recycle_broker(self, drain_timeout_s: float = 120.0) -> bool:
        """Free the embedded broker's memory without losing a frame.

        The embedded broker keeps every record in memory and never releases it. At a quiet
        point we stop ingest (it flushes what it captured), wait until every group has
        consumed everything (lag 0), stop the stages (they commit and leave), restart the
        broker empty, recreate the topics and start everything again. Returns False (and
        changes nothing but a short ingest pause) when the pipeline does not drain in time.
        """
        from framewire.ops.status import site_status

        ingest = [c for c in self.children if c.service in self.sources]
        stages = [c for c in self.children if c.service not in self.sources]
        log.warning("broker over its memory budget: recycling it",
                    extra={"rss_mb": self.broker_rss_mb(),
                           "budget_mb": self.settings.broker_memory_budget_mb})
        self.stop_services(ingest)
        deadline = time.monotonic() + drain_timeout_s
        # the stages this supervisor runs: a stage of the site it does not run (left out with
        # --services) never consumes, and its lag would hold the recycle off for good
        running = {c.service for c in stages}
        while True:
            statuses = [s for s in site_status(self.settings)
                        if s.lag is not None and s.service in running]
            if statuses and all(s.lag == 0 for s in statuses):
                break
            if time.monotonic() > deadline:
                log.warning("pipeline did not drain; broker recycle postponed")
                for child in ingest:
                    self._spawn(child)
                return False
            time.sleep(0.5)
        self.stop_services(stages)
        assert self.broker is not None
        self.broker.stop()
        self.broker.start()
        ensure_topics(self.settings)
        for child in stages + ingest:
            self._spawn(child)
        log.warning("broker recycled", extra={"rss_mb": self.broker_rss_mb()})
        return True


def managed_kafka(settings: Settings, logs: Path | None = None) -> KafkaCluster:
    """The Apache Kafka cluster the settings describe (not started)."""
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    security = KafkaSecurity(settings.home) if settings.kafka_security == "sasl_ssl" else None
    return KafkaCluster(settings.home, host, int(port), settings.broker_nodes,
                        settings.kafka_heap_mb, logs or settings.home / "logs", security)
