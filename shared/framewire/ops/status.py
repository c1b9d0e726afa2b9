"""Reading the site's state back from the broker: heartbeats, consumer lag, dead letters."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from framewire.broker.client import client_config
from framewire.broker.reading import LagProbe, read_topic
from framewire.config import Settings
from framewire.contracts import DeadLetter, ServiceHeartbeat
from framewire.contracts.codec import Codec, make_codec
from framewire.errors import DataError
from framewire.topology import topology


@dataclass
class ServiceStatus:
    """The latest heartbeats of one service's processes, its group's lag, and what is wrong."""

    service: str
    instances: list[ServiceHeartbeat] = field(default_factory=list)
    lag: int | None = None
    fresh_s: float = 6.0
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    problems: list[str] = field(default_factory=list)

    def age_s(self, beat: ServiceHeartbeat) -> float:
        return (self.now - beat.sent_at).total_seconds()

    @property
    def alive(self) -> list[ServiceHeartbeat]:
        """Processes that are running and sent a heartbeat recently."""
        return [b for b in self.instances
                if b.state != "stopped" and self.age_s(b) <= self.fresh_s]

    def total(self, counter: str) -> int:
        return sum(getattr(b, counter) for b in self.instances)

    @property
    def cpu_per_1000_frames(self) -> float | None:
        """The service's recent CPU-seconds per 1,000 frames (mean over its live processes)."""
        costs = [b.cpu_s_per_1000_frames for b in self.alive
                 if b.cpu_s_per_1000_frames is not None]
        return round(sum(costs) / len(costs), 3) if costs else None

    def joules_per_1000_frames(self, source: str = "host") -> float | None:
        """Energy per 1,000 records this service put out, over about the last minute.

        ``host``: the CPU packages (RAPL) of the hosts it runs on, whole hosts; on a one-host
        site every stage shows about the same figure. ``gpu``: the GPUs its processes run the
        model on (NVML). Processes on one host share its counter, so each host counts once,
        against the frames of all its processes.
        """
        by_host: dict[str, list[ServiceHeartbeat]] = {}
        for beat in self.alive:
            by_host.setdefault(beat.host, []).append(beat)
        watts = frames_per_s = 0.0
        for beats in by_host.values():
            metered = [b for b in beats if getattr(b, f"{source}_watts") is not None]
            if metered:
                watts += sum(getattr(b, f"{source}_watts") for b in metered) / len(metered)
                frames_per_s += sum(b.out_per_s or 0.0 for b in metered)
        return round(watts / frames_per_s * 1000, 1) if frames_per_s > 0 else None


def heartbeats(settings: Settings, codec: Codec, max_age_s: float = 30.0) -> list[ServiceHeartbeat]:
    """The latest heartbeat of each process seen in the last ``max_age_s`` seconds."""
    latest: dict[str, ServiceHeartbeat] = {}
    cutoff = datetime.now(UTC) - timedelta(seconds=max_age_s)
    for msg in read_topic(settings, settings.topic("status"), tail=2000):
        try:
            beat = codec.decode(msg.value(), ServiceHeartbeat)
        except DataError:
            continue
        if beat.sent_at >= cutoff:
            current = latest.get(beat.instance)
            if current is None or beat.sent_at >= current.sent_at:
                latest[beat.instance] = beat
    return list(latest.values())


def site_status(settings: Settings, codec: Codec | None = None) -> list[ServiceStatus]:
    """Per stage (in pipeline order): latest heartbeats of its processes, its consumer lag,
    and its problems."""
    codec = codec or make_codec(settings.schema_registry_url, settings.schema_registry_auth)
    beats = heartbeats(settings, codec)
    produced: dict[str, int] = {}
    for beat in beats:
        for tp, offset in beat.produced_offsets.items():
            produced[tp] = max(produced.get(tp, 0), offset)
    fresh_s = max(3 * settings.heartbeat_interval_s, 5.0)
    result = []
    for spec in topology(settings).stages:
        service = spec.name
        status = ServiceStatus(service, [b for b in beats if b.service == service],
                               fresh_s=fresh_s)
        if not spec.is_source:
            probe = LagProbe(settings, service)
            try:
                lags = probe.partition_lags(produced)
            finally:
                probe.close()
            status.lag = None if lags is None else sum(lags.values())
            status.problems += stalled_partitions(status, lags or {}, settings)
        status.problems += instance_problems(status)
        result.append(status)
    return result


def instance_problems(status: ServiceStatus) -> list[str]:
    """What the heartbeats of one service say is wrong, each with what to check."""
    problems = []
    for b in status.instances:
        who = f"{status.service} pid {b.pid} on {b.host}"
        if b.state != "stopped" and status.age_s(b) > status.fresh_s:
            problems.append(f"{who}: no heartbeat for {status.age_s(b):.0f} s: the process died "
                            "or hangs; check its log, `framewire run` restarts crashed services")
            continue
        if b.state == "stopped":
            continue
        if not b.broker_ok:
            problems.append(f"{who}: broker unreachable; it retries by itself: check the broker "
                            "and FRAMEWIRE_BOOTSTRAP_SERVERS")
        for cam in b.stalled_cameras:
            problems.append(f"{who}: camera {cam} stalled (no frame): check its power, network "
                            "and URL; ingest keeps reconnecting")
        if b.restarts:
            problems.append(f"{who}: restarted {b.restarts} time(s) by the supervisor; "
                            "read its log for the crash")
        for fault in b.faults:
            problems.append(f"{who}: {fault}")
        # the gateway's webhook deliveries given up are not frames: said apart
        hooks = b.drop_reasons.get("webhook_given_up", 0)
        if hooks:
            problems.append(f"{who}: {hooks} webhook delivery(ies) given up after their "
                            "retries; GET /api/v1/webhooks shows each one's last error")
        frames = {r: n for r, n in b.drop_reasons.items() if r != "webhook_given_up"}
        if b.dropped - hooks > 0:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(frames.items()))
            problems.append(f"{who}: {b.dropped - hooks} frame(s) dropped "
                            f"({reasons or 'back-pressure'}: pipeline behind, fps cap, broker "
                            "away or refusing frames)")
    return problems


def stalled_partitions(status: ServiceStatus, lags: dict[int, int],
                       settings: Settings) -> list[str]:
    """Partitions with lag that nobody consumes, or whose consumer stopped committing."""
    owners: dict[int, ServiceHeartbeat] = {}
    for b in status.alive:
        for tp in b.partitions:
            number = tp.rpartition(":")[2]
            if number.isdigit():  # a heartbeat is a record like any other: skip what is not
                owners[int(number)] = b
    problems = []
    for partition, lag in sorted(lags.items()):
        if lag <= 0:
            continue
        owner = owners.get(partition)
        if owner is None:
            if status.alive:  # with no replica at all, the service-level problem says it
                problems.append(f"{status.service}: partition {partition} has lag {lag} and no "
                                "live consumer owns it: a rebalance is pending or stuck")
            continue
        since = owner.last_commit_at
        idle_s = (status.now - since).total_seconds() if since else None
        if idle_s is not None and idle_s > settings.stall_s:
            problems.append(f"{status.service}: partition {partition} has lag {lag} but pid "
                            f"{owner.pid} has not committed for {idle_s:.0f} s: the stage is "
                            "stuck; check its log, restart it with SIGTERM")
    if lags and sum(lags.values()) > 0 and not status.alive:
        problems.append(f"{status.service}: lag {sum(lags.values())} and no live process: "
                        f"start one with `framewire service {status.service}`")
    return problems


def dead_letters(settings: Settings, codec: Codec | None = None,
                 newest: int | None = None) -> list[tuple[Any, DeadLetter]]:
    """Every dead letter on the topic (or the ``newest`` ones: only the last ``newest`` of
    each partition are read), oldest first, with its message (for offsets)."""
    codec = codec or make_codec(settings.schema_registry_url, settings.schema_registry_auth)
    out = []
    for msg in read_topic(settings, settings.topic("deadletter"), tail=newest):
        try:
            out.append((msg, codec.decode(msg.value(), DeadLetter)))
        except DataError:
            continue
    out.sort(key=lambda pair: pair[1].failed_at)
    return out if newest is None else out[-newest:]


@dataclass
class BrokerNode:
    """One broker node as ``framewire status`` shows it."""

    node_id: int
    listener: str
    pid: int | None
    alive: bool
    under_replicated_partitions: int | None


@dataclass
class BrokerStatus:
    """The broker nodes of the site: kind, each node, and what is wrong."""

    kind: str
    nodes: list[BrokerNode] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return any(n.alive for n in self.nodes)


def _pid_of(path: Any) -> int | None:
    """The pid written in ``path`` when that process still runs, else None."""
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def broker_status(settings: Settings, timeout_s: float = 5.0) -> BrokerStatus:
    """Each broker node: listener, pid (nodes this site manages), under-replicated partitions.

    A partition counts against the node that leads it when fewer replicas are in sync than it
    has (Kafka's UnderReplicatedPartitions).
    """
    status = BrokerStatus(settings.broker_kind)
    try:
        metadata = AdminClient(client_config(settings, log_level=0)).list_topics(
            timeout=timeout_s)
    except KafkaException as exc:
        metadata = None
        status.problems.append(f"broker {settings.bootstrap_servers} did not answer ({exc}); "
                               "is it running? see FRAMEWIRE_HOME/logs/broker*.log")
    listed = {b.id: f"{b.host}:{b.port}" for b in (metadata.brokers.values() if metadata else [])}
    under: dict[int, int] = {}
    offline = 0
    for topic in (metadata.topics.values() if metadata else []):
        for part in topic.partitions.values():
            if part.leader < 0:
                offline += 1
            elif len(part.isrs) < len(part.replicas):
                under[part.leader] = under.get(part.leader, 0) + 1
    if settings.manages_kafka:
        from framewire.ops.supervisor import managed_kafka

        for node in managed_kafka(settings).members:
            up = node.node_id in listed
            status.nodes.append(BrokerNode(node.node_id, node.listener, _pid_of(node.pid_file),
                                           up, under.get(node.node_id, 0) if up else None))
            if not up:
                status.problems.append(
                    f"broker node {node.node_id} ({node.listener}) is not in the cluster: "
                    f"down or starting; framewire run restarts it, see {node.log_path}")
    else:
        for node_id, listener in sorted(listed.items()):
            status.nodes.append(BrokerNode(node_id, listener, None, True,
                                           under.get(node_id, 0)))
    if offline:
        status.problems.append(f"{offline} partition(s) have no leader: their records can be "
                               "neither written nor read until a replica's node returns")
    if sum(under.values()):
        status.problems.append(f"{sum(under.values())} partition(s) under-replicated: a node "
                               "is down or behind; writes wait for min.insync.replicas")
    return status


def dead_letter_report(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter as ``framewire deadletters --json`` and the gateway show it."""
    return {"service": letter.service, "code": letter.code, "reason": letter.reason,
            "failed_at": letter.failed_at, "source_topic": letter.source_topic,
            "source_partition": letter.source_partition, "source_offset": letter.source_offset,
            "camera_id": letter.camera_id, "frame_id": letter.frame_id,
            "payload_bytes": len(letter.payload or b""), "payload_uri": letter.payload_uri}


def status_report(statuses: list[ServiceStatus], brokers: BrokerStatus) -> list[dict[str, Any]]:
    """The site's status as ``framewire status --json`` and the gateway's ``/status`` show it:
    one entry per service, then one for the broker, all of one shape."""
    now = datetime.now(UTC)
    return [
        {"service": s.service, "alive": bool(s.alive), "lag": s.lag,
         "records_in": s.total("records_in"), "records_out": s.total("records_out"),
         "dead_lettered": s.total("dead_lettered"), "dropped": s.total("dropped"),
         "cpu_s_per_1000_frames": s.cpu_per_1000_frames,
         "host_joules_per_1000_frames": s.joules_per_1000_frames("host"),
         "gpu_joules_per_1000_frames": s.joules_per_1000_frames("gpu"),
         "problems": s.problems,
         "instances": [
             {"instance": b.instance, "pid": b.pid, "host": b.host, "state": b.state,
              "version": b.version, "partitions": b.partitions,
              "seconds_since_heartbeat": round((now - b.sent_at).total_seconds(), 1),
              "records_in": b.records_in, "records_out": b.records_out,
              "dead_lettered": b.dead_lettered, "dropped": b.dropped,
              "drop_reasons": b.drop_reasons, "faults": b.faults,
              "model_name": b.model_name, "model_version": b.model_version,
              "restarts": b.restarts, "broker_ok": b.broker_ok,
              "stalled_cameras": b.stalled_cameras,
              "last_commit_at": b.last_commit_at, "metrics_port": b.metrics_port,
              "cpu_s_per_1000_frames": b.cpu_s_per_1000_frames,
              "out_per_s": b.out_per_s, "host_watts": b.host_watts,
              "gpu_watts": b.gpu_watts}
             for b in s.instances]}
        for s in statuses
    ] + [{
        # the services' keys, so every entry has one shape; a broker has no such counters
        "service": "broker", "kind": brokers.kind, "alive": brokers.alive, "lag": None,
        "records_in": None, "records_out": None, "dead_lettered": None, "dropped": None,
        "cpu_s_per_1000_frames": None, "host_joules_per_1000_frames": None,
        "gpu_joules_per_1000_frames": None, "problems": brokers.problems,
        "instances": [{"node_id": n.node_id, "listener": n.listener, "pid": n.pid,
                       "alive": n.alive,
                       "under_replicated_partitions": n.under_replicated_partitions}
                      for n in brokers.nodes]}]
