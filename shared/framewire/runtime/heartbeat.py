"""What a process reports about itself: its counters, in a heartbeat record every few seconds
from a thread of its own, with its cost and power and the port of its metrics server; and
what it does about broker outages (log once, notice the return, re-create lost topics)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import ClassVar

from confluent_kafka import KafkaError, KafkaException

from framewire import __version__
from framewire.config import Settings
from framewire.contracts import ServiceHeartbeat, utcnow
from framewire.contracts.codec import Codec
from framewire.errors import TransientError
from framewire.runtime.producer import TrackedProducer
from framewire.secrets import mask_urls_in
from framewire.telemetry.energy import EnergyCounters
from framewire.telemetry.metrics import CostWindow, ServiceMetrics, start_metrics_server

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What a process has done, reported in heartbeats and by ``framewire status``; each field
    is a field of the ``ServiceHeartbeat`` record of the same name."""

    records_in: int = 0
    records_out: int = 0
    dead_lettered: int = 0
    partitions: list[str] = field(default_factory=list)
    state: str = "starting"
    group: str | None = None
    dropped: int = 0
    broker_ok: bool = True
    stalled_cameras: list[str] = field(default_factory=list)
    last_commit_at: datetime | None = None
    # what keeps the process from working normally, each a sentence naming the fix
    faults: list[str] = field(default_factory=list)
    # dropped frames by reason code; ``dropped`` is their sum
    drop_reasons: dict[str, int] = field(default_factory=dict)
    # the model the process runs (inference; preprocess letterboxes for it), which a switch
    # on the control topic changes at run time
    model_name: str | None = None
    model_version: str | None = None

    # drop() and set_fault() read, then replace: threads of one process (a camera's, a model
    # watch's, a webhook's) call them at once; a class attribute, so not a heartbeat field
    _editing: ClassVar[threading.Lock] = threading.Lock()

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` frames dropped for ``reason`` (a short code)."""
        with self._editing:
            # a new dict, not changed in place: the heartbeat thread may be reading the old one
            self.drop_reasons = {**self.drop_reasons,
                                 reason: self.drop_reasons.get(reason, 0) + count}
            self.dropped += count

    def set_fault(self, key: str, message: str | None) -> None:
        """Report (``message``) or clear (None) the fault named ``key``; faults are kept in
        the order they were first reported, one per key; URLs in them are masked."""
        with self._editing:
            kept = [f for f in self.faults if not f.startswith(f"{key}: ")]
            self.faults = kept + [f"{key}: {mask_urls_in(message)}"] if message else kept


def report_broker_error(err: KafkaError, counters: Counters, servers: str) -> None:
    """Log a client error once per outage; librdkafka keeps reconnecting by itself."""
    if err.code() == KafkaError._ALL_BROKERS_DOWN:
        if counters.broker_ok:
            counters.broker_ok = False
            log.error("broker unreachable; retrying with backoff until it returns",
                      extra={"servers": servers, "check": "is the broker running? "
                             "FRAMEWIRE_BOOTSTRAP_SERVERS, listeners, network"})
    elif err.fatal():
        log.critical("fatal client error", extra={"error": err.str()})
    else:
        log.debug("broker connection problem", extra={"error": err.str()})


class BrokerWatch:
    """Whether the broker answers, as ``Counters.broker_ok`` says: an outage is logged once
    (the producer's error callback), its end noticed from an acknowledgement."""

    def __init__(self, counters: Counters, servers: str) -> None:
        self.counters, self.servers = counters, servers
        # set: the heartbeat thread makes sure the topics exist
        self.reconnected = threading.Event()

    def report(self, err: KafkaError) -> None:
        """A client's error callback."""
        report_broker_error(err, self.counters, self.servers)

    def delivered(self) -> None:
        """A record was acknowledged: if the broker had been away, its topics are checked."""
        if self.back():
            self.reconnected.set()

    def back(self) -> bool:
        """Mark the broker reachable; True (and logged once) when it had been away."""
        if self.counters.broker_ok:
            return False
        self.counters.broker_ok = True
        log.warning("broker reachable again", extra={"servers": self.servers})
        return True


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Heartbeats:
    """A process's status on the status topic, every ``heartbeat_interval_s``."""

    def __init__(self, settings: Settings, service: str, codec: Codec, metrics: ServiceMetrics,
                 counters: Counters, output: TrackedProducer, broker: BrokerWatch) -> None:
        self.settings, self.service, self.codec, self.metrics = settings, service, codec, metrics
        self.counters, self.output, self.broker = counters, output, broker
        self._cost = CostWindow()
        # a stage that runs its model on a GPU adds the GPU's meter (StageRunner)
        self.energy = EnergyCounters()
        self.metrics_port: int | None = None
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self) -> None:
        """Publish this process's status once."""
        c = self.counters
        cost = self._cost.sample(time.monotonic(), time.process_time(), c.records_out,
                                 self.energy.host_joules(), self.energy.gpu_joules())
        for gauge, value in ((self.metrics.cpu_per_1000, cost.cpu_s_per_1000_frames),
                             (self.metrics.host_watts, cost.host_watts),
                             (self.metrics.gpu_watts, cost.gpu_watts)):
            if value is not None:
                gauge.labels(self.service).set(value)
        # the counters travel under their own names: one field each in the heartbeat record
        beat = ServiceHeartbeat(
            **asdict(c), service=self.service, instance=self.instance,
            host=socket.gethostname(), pid=os.getpid(), version=__version__, sent_at=utcnow(),
            produced_offsets=self.output.produced_offsets(),
            restarts=self.settings.restart_count, metrics_port=self.metrics_port,
            cpu_s_per_1000_frames=_rounded(cost.cpu_s_per_1000_frames),
            out_per_s=_rounded(cost.out_per_s), host_watts=_rounded(cost.host_watts),
            gpu_watts=_rounded(cost.gpu_watts),
        )
        self.metrics.broker_up.labels(self.service).set(1 if c.broker_ok else 0)
        self.metrics.dropped.labels(self.service).set(c.dropped)
        self.output.produce_status(self.settings.topic("status"), self.codec.encode(beat),
                                   self.service.encode())

    def _after_outage(self) -> None:
        """While the broker is away, or once a delivery shows it back: when it answers, make
        sure every topic exists with its partitions (it may be a new, empty one: the embedded
        broker keeps no data). Producers never auto-create topics (Tansu would make 4
        partitions), so records for a missing topic wait until this has run."""
        from framewire.broker.client import ensure_topics

        try:
            created = ensure_topics(self.settings, timeout_s=min(5.0, self.settings.ack_timeout_s))
        except (TransientError, KafkaException) as exc:
            log.debug("broker still away", extra={"error": str(exc)})
            return
        self.broker.reconnected.clear()
        self.broker.back()
        if created:
            log.warning("broker came back without our topics (it lost its data); recreated them",
                        extra={"topics": created})

    def start(self, extra: Callable[[], None] | None = None) -> None:
        """Serve /metrics, send a heartbeat now and then every ``heartbeat_interval_s`` from a
        background thread (calling ``extra`` before each)."""

        def beat() -> None:
            while not self._stop.wait(self.settings.heartbeat_interval_s):
                try:
                    if self.broker.reconnected.is_set() or not self.counters.broker_ok:
                        self._after_outage()
                    if extra:
                        extra()
                    self.send()
                except Exception:  # a failed heartbeat must never stop the service
                    log.exception("heartbeat failed")

        self.metrics_port = start_metrics_server(self.settings.metrics_port,
                                                 self.settings.metrics_host)
        self.broker.reconnected.set()  # a service started alone makes the topics it finds missing
        self.send()
        self._thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread (waiting for a beat in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
