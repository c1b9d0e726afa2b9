"""A service's output side in one object: its producer (``producer.py``), dead letters
(``deadletters.py``) and heartbeats (``heartbeat.py``), sharing one codec, counters, metrics
and telemetry. Sources (ingest), tools (replay, bench) and the loop all start from it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Producer
from opentelemetry.trace import Span

from framewire.config import Settings
from framewire.contracts import Contract
from framewire.contracts.codec import Codec, make_codec
from framewire.errors import DataError, TransientError
from framewire.runtime.deadletters import DeadLetters
from framewire.runtime.heartbeat import BrokerWatch, Counters, Heartbeats, report_broker_error
from framewire.runtime.producer import Delivery, Headers, TrackedProducer
from framewire.runtime.stop import StopSignal
from framewire.store.blobs import BlobStore
from framewire.telemetry.energy import EnergyCounters
from framewire.telemetry.metrics import service_metrics
from framewire.telemetry.tracing import Telemetry

# re-exported: callers imported them from here before the units had modules of their own
__all__ = ["Counters", "Delivery", "Headers", "Publisher", "StopSignal", "report_broker_error"]

log = logging.getLogger(__name__)


class Publisher:
    """A producer for one service: encodes contracts, tracks acknowledgements, dead-letters,
    reports heartbeats."""

    def __init__(self, settings: Settings, service: str, codec: Codec | None = None,
                 blobs: BlobStore | None = None, transactional: bool = False,
                 auto_compression: str = "none") -> None:
        self.settings, self.service = settings, service
        self.codec = codec or make_codec(settings.schema_registry_url,
                                         settings.schema_registry_auth)
        self.blobs = blobs or BlobStore.from_settings(settings)
        self.counters = Counters()
        self.telemetry = Telemetry(service, settings)
        self.metrics = service_metrics()
        self.broker = BrokerWatch(self.counters, settings.bootstrap_servers)
        self.output = TrackedProducer(settings, service, on_error=self.broker.report,
                                      on_delivered=self.broker.delivered,
                                      transactional=transactional,
                                      auto_compression=auto_compression)
        self.heartbeats = Heartbeats(settings, service, self.codec, self.metrics, self.counters,
                                     self.output, self.broker)
        self.dead_letters = DeadLetters(settings, service, self.codec, self.blobs, self.output,
                                        self.telemetry, self.metrics, self.counters)

    @property
    def producer(self) -> Producer:
        """The confluent-kafka Producer records go through now (it is replaced when stuck)."""
        return self.output.producer

    @producer.setter
    def producer(self, producer: Producer) -> None:
        self.output.producer = producer

    @property
    def transactional(self) -> bool:
        return self.output.transactional

    @property
    def energy(self) -> EnergyCounters:
        """The meters heartbeats report power from (a GPU stage adds its GPU's)."""
        return self.heartbeats.energy

    def publish(self, topic: str, record: Contract, key: str,
                headers: Headers | None = None, delivery: Delivery | None = None,
                partition: int | None = None) -> None:
        """Queue a record for a logical topic (``frames.raw`` ...).

        Its acknowledgement is awaited by ``flush``, or counted in ``delivery`` when given.
        Without ``partition``, the key's hash picks the partition.
        """
        self.output.produce(self.settings.topic(topic), self.codec.encode(record),
                            key.encode(), headers, delivery, partition)

    def produce_raw(self, topic: str, value: bytes, key: bytes | None,
                    headers: Headers | None, delivery: Delivery | None = None,
                    partition: int | None = None, producer: Producer | None = None) -> None:
        """Queue already-encoded bytes for a full topic name (retrying while the queue is full)."""
        self.output.produce(topic, value, key, headers, delivery, partition, producer)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged; TransientError if any was not."""
        self.output.flush(timeout_s)

    def partition_count(self, topic: str) -> int | None:
        """Partitions of a full topic name, from the broker's metadata; None while unknown."""
        return self.output.partition_count(topic)

    def produced_offsets(self) -> dict[str, int]:
        """Highest acknowledged offset + 1 per ``topic:partition`` this process wrote."""
        return self.output.produced_offsets()

    def count_in(self, n: int = 1) -> None:
        """Records received (heartbeat counters and Prometheus)."""
        self.counters.records_in += n
        self.metrics.records_in.labels(self.service).inc(n)

    def count_out(self, n: int = 1) -> None:
        """Records produced, or stored by a sink."""
        self.counters.records_out += n
        self.metrics.records_out.labels(self.service).inc(n)

    def dead_letter(self, error: DataError, *, payload: bytes | None, key: bytes | None = None,
                    source: tuple[str | None, int | None, int | None] | None = None,
                    camera_id: str | None = None, frame_id: str | None = None,
                    headers: Headers | None = None, span: Span | None = None,
                    delivery: Delivery | None = None, private: bool = True) -> None:
        """Send a record that could not be processed to the dead-letter topic, with the reason
        (``private``: its payload may be a frame in privacy mode, kept off the blob store)."""
        self.dead_letters.send(error, payload=payload, key=key, source=source,
                               camera_id=camera_id, frame_id=frame_id, headers=headers,
                               span=span, delivery=delivery, private=private)

    def heartbeat(self) -> None:
        """Publish this process's status once."""
        self.heartbeats.send()

    def start_heartbeats(self, extra: Callable[[], None] | None = None) -> None:
        """Send a heartbeat every ``heartbeat_interval_s`` from a background thread."""
        self.heartbeats.start(extra)

    def close(self) -> None:
        """Final heartbeat, flush everything, stop the heartbeat thread."""
        self.heartbeats.stop()
        self.counters.state = "stopped"
        try:
            self.heartbeats.send()
            self.flush(self.settings.shutdown_timeout_s)
        except TransientError as exc:
            log.error("records left unacknowledged at shutdown", extra={"error": str(exc)})
        self.telemetry.shutdown()
