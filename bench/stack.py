"""Framewire under measurement: the supervisor's stack in a temporary home, fed by ``feed``.

Each site gets its own home (SQLite database, blobs, logs) and its settings through
``FRAMEWIRE_*`` environment variables, which the supervisor's service processes inherit;
whatever ``FRAMEWIRE_*`` the user set (pixel format, batch sizes...) applies too.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.feed import Feeder, FeedPlan
from bench.machine import (
    EnergyMeter,
    other_cores,
    process_cpu_seconds,
    process_memory_mib,
    system_busy_seconds,
)

Tick = Callable[[float], None]
DATA_TOPICS = ("frames.raw", "frames.ready", "detections")
# the times a stored result carries, in the order a frame passes them
TIMELINE = ("captured_at", "ingested_at", "preprocessed_at", "inferred_at", "stored_at")
# Enough queued frames to keep every stage busy, few enough that the broker's memory and the
# drain at the end stay small (the default, 2000 frames, is sized for live cameras).
BENCH_MAX_LAG_FRAMES = 240


class StackFailed(RuntimeError):
    """A service of the benchmarked stack died or never became ready."""


def default_layout(cores: int, partitions: int = 12) -> dict[str, int]:
    """Processes per service for ``cores`` cores: one inference replica per core.

    Inference is about 2/3 of a frame's CPU time with the default model, so it gets a
    single-threaded replica per core; one preprocess replica per four cores keeps up with
    them (it measured ~3x faster per frame than inference); storage is one writer.
    """
    return {"preprocess": min(partitions, max(1, math.ceil(cores / 4))),
            "inference": min(partitions, cores), "storage": 1}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free TCP ports on 127.0.0.1 (an Apache Kafka node
    listens for clients on the first and for its controller quorum on the next)."""
    from framewire.broker.cluster import free_port_block
    from framewire.errors import TransientError

    try:
        return free_port_block(count)
    except TransientError as exc:
        raise StackFailed(str(exc)) from exc


def now_s() -> float:
    """Wall-clock seconds (UTC epoch), comparable with the database's timestamps."""
    return datetime.now(UTC).timestamp()


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (children started inside inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def site_environment(home: Path, bootstrap: str, embedded: bool, prefix: str = "",
                     broker: str = "embedded",
                     delivery: str = "at_least_once") -> dict[str, str]:
    """The settings a benchmark site overrides; every other ``FRAMEWIRE_*`` is the user's.

    ``broker`` is the kind the site's supervisor starts when ``embedded`` (the Tansu
    broker, or a single Apache Kafka node as ``framewire run --broker kafka`` starts it);
    ``delivery`` is what the site is measured with.
    """
    env = {
        "FRAMEWIRE_HOME": str(home),
        "FRAMEWIRE_BOOTSTRAP_SERVERS": bootstrap,
        "FRAMEWIRE_EMBEDDED_BROKER": "true" if embedded else "false",
        "FRAMEWIRE_BROKER": broker,
        "FRAMEWIRE_DELIVERY": delivery,
        "FRAMEWIRE_TOPIC_PREFIX": prefix,
        "FRAMEWIRE_DATABASE_URL": f"sqlite:///{(home / 'framewire.db').resolve()}",
        "FRAMEWIRE_BLOB_DIR": str(home / "blobs"),
        "FRAMEWIRE_INGEST__MAX_LAG_FRAMES": str(BENCH_MAX_LAG_FRAMES),
        # a recycle in the middle of a measurement would be measured too
        "FRAMEWIRE_BROKER_MEMORY_BUDGET_MB": "0",
    }
    if broker == "kafka":
        env["FRAMEWIRE_BROKER_NODES"] = "1"
    return env


def bench_supervisor(settings: Any, layout: dict[str, int]) -> Any:
    """The supervisor of a site, noting when its broker answered with every topic made.

    ``Supervisor.start`` starts the broker, waits for its metadata, creates the topics and
    only then starts the services, so the first service start marks the broker's start-up.
    """
    from framewire.ops.supervisor import Child, Supervisor

    class TimedSupervisor(Supervisor):
        topics_ready_at: float | None = None

        def _spawn(self, child: Child) -> None:
            if self.topics_ready_at is None:
                self.topics_ready_at = time.monotonic()
            super()._spawn(child)

    return TimedSupervisor(settings, list(layout), demo=False, replicas=layout)


@dataclass
class Sample:
    """CPU seconds per service, stored rows and energy at one moment."""

    at: float
    rows: int
    cpu_s: dict[str, float]
    energy: Any
    busy_s: float | None = None  # the whole machine's busy CPU-seconds
    bench_s: float = 0.0  # this (measuring) process's CPU-seconds


def noise_cores(before: Sample, after: Sample) -> float | None:
    """Cores used by processes other than the stack and the benchmark between two samples."""
    ours = (sum(after.cpu_s.values()) - sum(before.cpu_s.values())
            + after.bench_s - before.bench_s)
    return other_cores(before.busy_s, after.busy_s, ours, after.at - before.at)




class BenchSite:
    """One supervised Framewire stack (broker + services) in its own home."""

    def __init__(self, home: Path, layout: dict[str, int], env: dict[str, str]) -> None:
        from framewire.config import load_settings

        self.home, self.layout, self.env = home, layout, env
        with environment(env):
            self.settings = load_settings()
        self.supervisor = bench_supervisor(self.settings, layout)
        self._db: Any = None
        # seconds from starting the broker process to its metadata answer with every topic
        # made (what framewire run waits for before it starts the services)
        self.startup_s: float | None = None

    def start(self) -> None:
        # tables first: processes that open one SQLite file at once race to create them
        self.db.count_results()
        with environment(self.env):
            begun = time.monotonic()
            self.supervisor.start()
            made = getattr(self.supervisor, "topics_ready_at", None) or time.monotonic()
            # Apache Kafka lists a new topic before its partitions have a leader
            led = self.wait_leaders()
            self.startup_s = round((made if led is None else max(made, led)) - begun, 3)

    def wait_leaders(self, timeout_s: float = 60.0) -> float | None:
        """Until the broker's metadata shows a leader for every partition of every topic;
        when that took more than the first look, the time (``time.monotonic()``) it did."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        from framewire.broker.client import client_config
        from framewire.topology import topology

        admin = AdminClient(client_config(self.supervisor.settings, log_level=0))
        names = [self.settings.topic(name) for name in topology(self.settings).topics]
        deadline = time.monotonic() + timeout_s
        first = True
        while True:
            try:
                topics = admin.list_topics(timeout=5.0).topics
                if all(name in topics and topics[name].error is None and topics[name].partitions
                       and all(p.leader >= 0 and p.error is None
                               for p in topics[name].partitions.values()) for name in names):
                    return None if first else time.monotonic()
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise StackFailed(f"the broker showed no leader for every partition within "
                                  f"{timeout_s:.0f} s; see the logs in {self.home / 'logs'}")
            first = False
            time.sleep(0.05)

    def stop(self) -> None:
        with environment(self.env):
            self.supervisor.stop()
        if self._db is not None:
            self._db.close()

    @property
    def db(self) -> Any:
        if self._db is None:
            from framewire.store.db import open_database

            self._db = open_database(self.settings.resolved_database_url)
        return self._db

    def pids(self) -> dict[str, list[int]]:
        """Process ids by service (and the broker when this site runs it)."""
        out: dict[str, list[int]] = {}
        for child in self.supervisor.children:
            if child.process is not None:
                out.setdefault(child.service, []).append(child.process.pid)
        broker = self.supervisor.broker
        if broker is not None and broker.process is not None:
            out["broker"] = [broker.process.pid]
        kafka = self.supervisor.kafka
        if kafka is not None:  # Apache Kafka: the nodes' java processes
            out["broker"] = [n.process.pid for n in kafka.members if n.process is not None]
        return out

    def check_alive(self) -> None:
        for child in self.supervisor.children:
            if child.process is None or child.process.poll() is not None:
                raise StackFailed(f"{child.service} exited during the benchmark; see "
                                  f"{child.log_path}")
        broker = self.supervisor.broker
        if broker is not None and broker.process is not None and broker.process.poll() is not None:
            raise StackFailed(f"the embedded broker exited during the benchmark; see "
                              f"{self.home / 'logs' / 'broker.log'}")
        dead = self.supervisor.kafka.dead_nodes() if self.supervisor.kafka is not None else []
        if dead:
            raise StackFailed(f"Apache Kafka node {dead[0].node_id} exited during the "
                              f"benchmark; see {dead[0].log_path}")

    def broker_memory_mib(self) -> tuple[float, float] | None:
        """(resident, peak resident) MiB of the site's broker process(es), summed; None when
        the site runs no broker of its own or /proc cannot tell."""
        pids = self.pids().get("broker", [])
        found = [m for m in (process_memory_mib(pid) for pid in pids) if m is not None]
        if not pids or len(found) != len(pids):
            return None
        return round(sum(m[0] for m in found), 1), round(sum(m[1] for m in found), 1)

    def saw_transactions(self) -> bool | None:
        """Whether the site's Apache Kafka holds its transaction log (it makes
        ``__transaction_state`` when the first transactional producer starts); None when the
        cluster did not answer."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        from framewire.broker.client import client_config

        with environment(self.env):
            admin = AdminClient(client_config(self.supervisor.settings, log_level=0))
            try:
                return "__transaction_state" in admin.list_topics(timeout=10.0).topics
            except KafkaException:
                return None

    def wait_ready(self, timeout_s: float = 90.0, tick: Tick | None = None) -> None:
        """Until every replica is running with partitions assigned (group joins done)."""
        from confluent_kafka import KafkaException

        from framewire.ops.status import site_status

        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            self.check_alive()
            with environment(self.env):
                try:
                    statuses = {s.service: s for s in site_status(self.settings)}
                except KafkaException:  # a new cluster still electing leaders: look again
                    time.sleep(1.0)
                    continue
            if all(len([b for b in statuses[name].alive if b.partitions]) >= count
                   for name, count in self.layout.items()):
                return
            if tick is not None:
                tick(min(0.99, (time.monotonic() - started) / 20.0))
            time.sleep(1.0)
        raise StackFailed(f"the services did not all join their groups within {timeout_s:.0f} s;"
                          f" see the logs in {self.home / 'logs'}")

    def count(self) -> int:
        return int(self.db.count_results())

    def rows(self, since: float = 0.0) -> list[tuple[float, ...]]:
        """Per result captured since ``since``: its ``TIMELINE`` times, in epoch seconds."""
        import sqlalchemy as sa

        from framewire.store.db import result_table

        columns = [result_table.c[name] for name in TIMELINE]
        stmt = sa.select(*columns).where(
            result_table.c.captured_at >= datetime.fromtimestamp(since, UTC))
        with self.db.engine.connect() as conn:
            return [tuple(t.timestamp() for t in row) for row in conn.execute(stmt)]

    def sample(self, extra_pids: dict[str, list[int]], meter: EnergyMeter) -> Sample:
        cpu: dict[str, float] = {}
        for service, pids in {**self.pids(), **extra_pids}.items():
            cpu[service] = sum(process_cpu_seconds(pid) or 0.0 for pid in pids)
        return Sample(now_s(), self.count(), cpu, meter.read_joules(), system_busy_seconds(),
                      time.process_time())

    def watch(self, started: float, until: float, tick: Tick | None = None,
              scale: float = 1.0) -> None:
        """Until ``until`` (``time.monotonic()``), failing as soon as a service dies; ``tick``
        gets ``scale`` times the share of ``started``..``until`` gone by."""
        while time.monotonic() < until:
            self.check_alive()
            if tick is not None:
                tick(scale * (time.monotonic() - started) / (until - started))
            time.sleep(0.25)

    def wait_stored(self, target: int, timeout_s: float, tick: Tick | None = None) -> int:
        """Until ``target`` results are stored (the pipeline drained); the count reached."""
        deadline = time.monotonic() + timeout_s
        stored = self.count()
        while stored < target and time.monotonic() < deadline:
            self.check_alive()
            if tick is not None:
                tick(min(0.99, stored / max(target, 1)))
            time.sleep(0.25)
            stored = self.count()
        return stored

    def feeder(self, files: dict[str, list[Path]], rate_fps: float | None) -> Feeder:
        with environment(self.env):
            feeder = Feeder(FeedPlan(files, rate_fps, self.home / "logs" / "feed.log"))
            feeder.start()
        return feeder

    def dead_lettered(self) -> int:
        from framewire.broker.reading import read_topic

        with environment(self.env):
            return len(read_topic(self.settings, self.settings.topic("deadletter")))

    def bytes_per_frame(self, tail: int = 8) -> dict[str, float]:
        """Mean record size (key + value + headers, before compression) per data topic."""
        from framewire.broker.reading import read_topic

        sizes: dict[str, float] = {}
        with environment(self.env):
            for name in DATA_TOPICS:
                messages = read_topic(self.settings, self.settings.topic(name), tail=tail)
                if messages:
                    sizes[name] = round(sum(_record_size(m) for m in messages) / len(messages))
        sizes["total"] = sum(sizes.values())
        return sizes


def _record_size(msg: Any) -> int:
    headers = msg.headers() or []
    return (len(msg.value() or b"") + len(msg.key() or b"")
            + sum(len(k) + len(v or b"") for k, v in headers))
