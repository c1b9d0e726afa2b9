"""Reading and writing the site's settings topics (``cameras``, ``control``) from commands and
the gateway: whole-topic reads by this process's principal, one-record writes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from framewire.broker.client import client_config, ensure_topics
from framewire.broker.reading import KeyedValue, TopicFollower
from framewire.config import Settings
from framewire.errors import TransientError

log = logging.getLogger(__name__)


def topic_exists(settings: Settings, logical: str, timeout_s: float) -> bool:
    """Whether the site's topic ``logical`` exists; TransientError when the broker is away."""
    name = settings.topic(logical)
    try:
        topics = AdminClient(client_config(settings, {"log_level": 0})).list_topics(
            name, timeout=timeout_s).topics
    except KafkaException as exc:
        raise TransientError(f"cannot reach the broker at {settings.bootstrap_servers} "
                             f"({exc}); is it running?") from exc
    meta = topics.get(name)
    return meta is not None and meta.error is None and bool(meta.partitions)


def read_whole(settings: Settings, logical: str, timeout_s: float) -> list[KeyedValue]:
    """Every record of the settings topic ``logical``, in order; none while it does not
    exist yet."""
    if not topic_exists(settings, logical, timeout_s):
        return []
    # the group (never joined) of this process's principal: one its ACLs allow
    follower = TopicFollower(settings, settings.topic(logical),
                             settings.group(settings.kafka_principal or "cli"))
    try:
        return follower.read_to_end(timeout_s)
    finally:
        follower.close()


def write_record(settings: Settings, logical: str, key: str, value: bytes | None,
                 timeout_s: float) -> list[str]:
    """One record on the settings topic ``logical`` (made first if missing), acknowledged by
    all in-sync replicas; returns the delivery errors, empty when it took. A caller raises
    with its own words when the list is not empty."""
    if not topic_exists(settings, logical, timeout_s):
        ensure_topics(settings, timeout_s)
    # not idempotent: Apache Kafka takes about a second to hand a producer its id, and a
    # retried record of this one-record producer could only repeat the latest value
    producer = Producer(client_config(
        settings, {"acks": "all", "enable.idempotence": False, "log_level": 0},
        **{"client.id": f"framewire-{logical}", "allow.auto.create.topics": False}))
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err.str())

    producer.produce(settings.topic(logical), key=key.encode(), value=value,
                     on_delivery=delivered)
    if producer.flush(timeout_s):
        failed.append(f"not acknowledged within {timeout_s:.0f} s")
    return failed


class TopicWatch:
    """A service's watch of the settings topic ``logical``, in a thread of its own.

    ``start`` reads the topic to its end and hands the records to ``handle`` (False, logged,
    when the broker cannot be read now: the thread hands them over once it can); ``follow``
    then hands ``handle`` each batch written after, in order, until ``close``, in a thread
    named ``thread_name`` (``<logical>-watch`` by default). ``handle`` must not raise: an
    exception is logged and the following goes on.
    """

    def __init__(self, settings: Settings, logical: str, service: str,
                 handle: Callable[[list[KeyedValue]], None],
                 start_timeout_s: float = 10.0, thread_name: str | None = None) -> None:
        self.logical, self.handle, self.start_timeout_s = logical, handle, start_timeout_s
        self.thread_name = thread_name or f"{logical}-watch"
        # a change waits at most this long on the broker: 2 fetches a second of a quiet topic
        self.follower = TopicFollower(settings, settings.topic(logical), settings.group(service),
                                      fetch_wait_ms=500)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """The topic read to its end and handed over; False when it could not be read."""
        try:
            records = self.follower.read_to_end(self.start_timeout_s)
        except TransientError as exc:
            log.warning(f"{self.logical} topic not read at start: its settings apply once it "
                        "can be read", extra={"error": str(exc)})
            return False
        self._hand(records)
        return True

    def follow(self) -> None:
        """Hand over the topic's next records in a thread of its own until closed."""
        self._thread = threading.Thread(target=self._follow, name=self.thread_name,
                                        daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                records = self.follower.poll(0.5)
            except TransientError as exc:
                log.debug(f"{self.logical} topic not readable yet", extra={"error": str(exc)})
                self._stop.wait(1.0)
                continue
            if records:
                self._hand(records)

    def _hand(self, records: list[KeyedValue]) -> None:
        try:
            self.handle(records)
        except Exception:  # a bad record or a failed apply must never end the following
            log.exception(f"{self.logical} topic's records not applied")

    def close(self) -> None:
        """Stop following (waits for a hand-over in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.follower.close()
