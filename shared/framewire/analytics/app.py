"""The analytics service on faust-streaming: ``detections`` in, ``events`` and ``alerts`` out.

One agent reads ``detections`` (raw bytes, decoded with Framewire's codec), keyed by camera
id, so a camera's frames come in order to one worker; ``CameraWork`` tracks and analyses them.
Each camera's state (tracker window, tracks' sides and stays, open windows, alert states) is
saved after each frame in the table ``state``, whose changelog topic
(``<group>-state-changelog``) a worker given the camera's partition (a restart, a rebalance,
a replica killed) reads back before it goes on. The app's id is the stage's consumer group
(``framewire-analytics`` with the site's prefix), so lag, status and ACLs name it as any
stage's. It runs on Apache Kafka and on the embedded broker (at-least-once there).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from framewire.analytics.credentials import broker_credentials
from framewire.analytics.service import CameraWork, Done
from framewire.broker.client import TopicPlan, client_config, consumer_defaults
from framewire.broker.client import _create_topics as create_topics  # the one creation path
from framewire.config import Settings
from framewire.contracts.codec import Codec
from framewire.errors import ConfigError, DataError, TransientError
from framewire.ops.analytics import AnalyticsWatch
from framewire.runtime import Publisher, StopSignal
from framewire.runtime.producer import Headers
from framewire.telemetry.tracing import extract, inject

log = logging.getLogger(__name__)

SERVICE = "analytics"
STATE_TABLE = "state"


def faust_options(settings: Settings, partitions: int, replication: int) -> dict[str, Any]:
    """faust.App's settings from Framewire's: brokers, TLS and SASL, group timing, delivery,
    topic shape."""
    servers = settings.client_bootstrap_servers.split(",")
    options: dict[str, Any] = {
        "broker": [f"kafka://{s.strip()}" for s in servers],
        "store": "memory://",  # the changelog is the state: read back on assignment
        "datadir": str(settings.home / "analytics"),  # faust's own files (not the cwd)
        "key_serializer": "raw",
        "value_serializer": "json",  # the changelog is the state: read back on assignment
        "web_enabled": False,
        "autodiscover": False,
        "topic_partitions": partitions,
        "topic_replication_factor": replication,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "processing_guarantee": settings.delivery,
        "broker_commit_every": 100,
        "broker_commit_interval": 1.0,
        "table_standby_replicas": 0,
    }
    # the same principal, password and CA as the process's librdkafka clients
    credentials = broker_credentials(settings)
    if credentials is not None:
        options["broker_credentials"] = credentials
    # the group timing the other stages get, in seconds: the site's (a quick failover's
    # session.timeout.ms), else the embedded broker's defaults, where a join takes about half
    # the session timeout (faust's own 60 s held the first events back 30 s)
    timing = {**consumer_defaults(settings), **settings.kafka}
    if "session.timeout.ms" in timing:
        options["broker_session_timeout"] = int(timing["session.timeout.ms"]) / 1000
    if "heartbeat.interval.ms" in timing:
        options["broker_heartbeat_interval"] = int(timing["heartbeat.interval.ms"]) / 1000
    return options


def topic_shape(publisher: Publisher, settings: Settings) -> tuple[int, int]:
    """(partitions of ``detections``, replication factor for the changelog) from the broker;
    faust's own topics made first, so that no worker starts before they are there."""
    topic = settings.topic("detections")
    metadata = publisher.producer.list_topics(topic, timeout=30)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ConfigError(f"topic {topic} not found on {settings.bootstrap_servers}: start "
                          "the site (`framewire run`) or create its topics first")
    partitions = len(found.partitions)
    replication, isr = settings.replication(len(metadata.brokers))
    ensure_faust_topics(settings, partitions, replication, isr)
    return partitions, replication


def ensure_faust_topics(settings: Settings, partitions: int, replication: int,
                        isr: int) -> None:
    """Create the table's changelog and faust's leader topic, and wait until they are seen.

    Faust makes them itself too, but two workers starting together race: one can read the
    changelog's metadata before its partitions exist, and its agent then fails on every try
    (``PartitionsMismatch``)."""
    from confluent_kafka.admin import AdminClient

    group = settings.group(SERVICE)
    configs = {} if settings.on_tansu else {"min.insync.replicas": str(isr)}
    plans = [TopicPlan(f"{group}-{STATE_TABLE}-changelog", partitions, replication,
                       {**configs, "cleanup.policy": "compact"}),
             TopicPlan(f"{group}-__assignor-__leader", 1, replication, configs)]
    admin = AdminClient(client_config(settings))
    create_topics(admin, plans, 30.0)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        listed = admin.list_topics(timeout=10).topics
        if all(p.name in listed and len(listed[p.name].partitions) == p.partitions
               for p in plans):
            return
        time.sleep(0.2)
    raise TransientError(f"faust's topics for {group} not visible after 30 s; check the "
                         "broker and FRAMEWIRE_BOOTSTRAP_SERVERS")


class AnalyticsApp:
    """The faust app and what it reports: one instance per worker process."""

    def __init__(self, settings: Settings, publisher: Publisher | None = None,
                 partitions: int | None = None, replication: int = 1) -> None:

        from framewire.analytics.transactions import FixedApp

        self.settings = settings
        self.publisher = publisher
        self.codec: Codec = publisher.codec if publisher is not None else Codec()
        self.work = CameraWork(settings.analytics, self.codec)
        if partitions is None:
            assert publisher is not None, "without a publisher, give partitions"
            partitions, replication = topic_shape(publisher, settings)
        self.partitions = partitions
        # faust's app with the consumer's fixes (transactions.py), under either delivery: its
        # faults after a failover are not exactly_once's alone
        self.app = FixedApp(settings.group(SERVICE),
                            **faust_options(settings, partitions, replication))
        self.source = self.app.topic(settings.topic("detections"), key_type=bytes,
                                     value_type=bytes, key_serializer="raw",
                                     value_serializer="raw")
        self.outputs = {name: self.app.topic(settings.topic(name), key_type=bytes,
                                             value_type=bytes, key_serializer="raw",
                                             value_serializer="raw")
                        for name in ("events", "alerts")}
        # keys: camera ids (raw UTF-8); values: JSON (the app's default serializers)
        self.table = self.app.Table(STATE_TABLE, default=None, partitions=partitions)
        self.sends = True
        self.agent = self.app.agent(self.source, name="analyse")(self.analyse)
        # mode's signal types ask for a positional-only sender, which a bound method cannot say
        self.app.on_partitions_assigned.connect(self._assigned)  # type: ignore[arg-type]
        self.app.on_partitions_revoked.connect(self._revoked)  # type: ignore[arg-type]

    async def analyse(self, stream: Any) -> AsyncIterator[Done | None]:
        """Each detections record in turn: decoded, analysed, published, its state saved."""
        async for event in stream.events():
            message = event.message
            done = self.process(event.key, event.value, message.headers,
                                (message.topic, message.partition, message.offset))
            if done is not None:
                await self.publish(done, message.headers, message.partition)
                await self.save(done, message.partition)
            yield done

    async def save(self, done: Done, partition: int) -> None:
        """Keep (or clear) the camera's state in the table.

        Under exactly_once its changelog record is sent now, into the input partition's
        transaction, before the record's offset can be committed (faust would send it later,
        from its buffer, maybe into the next transaction: lost if the worker dies between)."""
        if done.state is None and not done.clear:
            return
        if self.sends and self.settings.delivery == "exactly_once":
            from framewire.analytics.transactions import save_in_transaction

            await save_in_transaction(self.table, done.camera_id, done.state, partition)
        elif done.state is not None:
            self.table[done.camera_id] = done.state
        else:
            del self.table[done.camera_id]

    async def publish(self, done: Done, incoming: Any, partition: int) -> None:
        """Send one record's events and alerts, keyed by camera, with its trace context.

        Under exactly_once they go in the transaction of the input's partition (with its
        offsets and the table's changelog): faust would pick the transaction by the output
        partition, which only works for topics it reads. Agent tests set ``sends = False``:
        faust has no in-memory broker."""
        if not self.sends:
            return
        headers = self._headers(incoming)
        if self.settings.delivery == "exactly_once":
            transactions = self.app.consumer.transactions
            group = self.app.assignor.group_for_topic(self.source.get_topic_name())
            transactional_id = f"{self.app.conf.id}-{group}-{partition}"
            for out in done.outgoing:
                await transactions.producer.send(
                    self.outputs[out.topic].get_topic_name(), out.key.encode(), out.value,
                    None, None, headers, transactional_id=transactional_id)
        else:
            for out in done.outgoing:
                await self.outputs[out.topic].send(key=out.key.encode(), value=out.value,
                                                   headers=headers)
        if self.publisher is not None:
            self.publisher.count_out(len(done.outgoing))

    def process(self, key: bytes | None, value: bytes | None, headers: Any,
                source: tuple[str, int, int]) -> Done | None:
        """One record: what to publish and save, or None (dead-lettered)."""
        if self.publisher is not None:
            self.publisher.count_in()
        try:
            result = self.work.decode(value)
        except DataError as exc:
            self._dead_letter(exc, key, value, headers, source)
            return None
        saved = self.table.get(result.header.camera_id)
        try:
            return self.work.handle(result, saved)
        except Exception as exc:  # a bug on one record must not stop the worker
            log.exception("analytics failed on a record", extra={
                "camera_id": result.header.camera_id, "frame_id": result.header.frame_id})
            self.work.forget([result.header.camera_id])
            self._dead_letter(DataError("analytics_failed", f"analytics failed on this "
                                        f"record: {type(exc).__name__}: {exc}"),
                              key, value, headers, source, result.header.frame_id)
            return None

    def _dead_letter(self, error: DataError, key: bytes | None, value: bytes | None,
                     headers: Any, source: tuple[str, int, int],
                     frame_id: str | None = None) -> None:
        if self.publisher is None:
            log.warning("dead letter (no publisher)", extra={"code": error.code})
            return
        self.publisher.dead_letter(error, payload=value, key=key, source=source,
                                   frame_id=frame_id, headers=_kafka_headers(headers))

    def _headers(self, incoming: Any) -> list[tuple[str, bytes]]:
        """The frame's trace context carried on, through a span of this service's own."""
        if self.publisher is None:
            return []
        span = self.publisher.telemetry.start("analytics", extract(_kafka_headers(incoming)))
        span.end()
        return [(k, v.encode() if isinstance(v, str) else v) for k, v in inject(span)
                if v is not None]

    async def _assigned(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        mine = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned
                      if tp.topic == self.source.get_topic_name())
        if self.publisher is not None:
            self.publisher.counters.partitions = mine
            self.publisher.counters.state = "running"
        log.info("partitions assigned", extra={"partitions": mine})

    async def _revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # the cameras may come back from another worker: take their state from the table then
        self.work.forget()


def _kafka_headers(headers: Any) -> Headers:
    """faust's headers (a list of pairs or a dict) as the runtime's."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v) for k, v in items]


def run(settings: Settings, stop: StopSignal | None = None) -> None:
    """Run one analytics worker until SIGTERM/SIGINT (or ``stop``)."""
    import faust

    publisher = Publisher(settings, SERVICE)
    publisher.counters.group = settings.group(SERVICE)
    analytics = AnalyticsApp(settings, publisher)
    # cameras' settings set over the API (the control topic), from before the first record
    control = AnalyticsWatch(settings, SERVICE, analytics.work.set_overrides)
    # not read (the broker away): cameras set only there are passed over until it is
    analytics.work.overrides_read = control.start()
    control.follow()
    publisher.start_heartbeats()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = faust.Worker(analytics.app, loop=loop, quiet=True, redirect_stdouts=False,
                          override_logging=False, loglevel=settings.log_level.lower())
    if stop is not None:
        def watch() -> None:
            while not stop.wait(1.0):
                pass
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(worker.stop()))

        threading.Thread(target=watch, name="analytics-stop", daemon=True).start()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        control.close()
        publisher.close()
