"""Reading and writing the site's settings topics (``cameras``, ``control``) from commands and
the gateway: whole-topic reads by this process's principal, one-record writes."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from framewire.broker.client import client_config, ensure_topics
from framewire.broker.reading import KeyedValue, TopicFollower
from framewire.config import Settings
from framewire.errors import TransientError


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
