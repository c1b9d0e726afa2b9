"""Results straight from Kafka: the ``detections`` topic, decoded with the shipped schemas.

``DetectionsConsumer`` is a consumer group member that yields each result as an
``InferenceResult`` (any version in ``schemas/``, read as the newest), and marks a result
handled only when the caller asks for the next one; ``decode_result`` decodes one value read
by any Kafka client. docs/subscribe.md says what is on the topic.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from confluent_kafka import Consumer, KafkaException, Message

from framewire.contracts import InferenceResult
from framewire.contracts.codec import Codec, make_codec
from framewire.errors import DataError

if TYPE_CHECKING:
    from framewire.config import Settings

log = logging.getLogger(__name__)

TOPIC = "detections"
# what a subscriber wants unless told otherwise (each may be overridden)
DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",      # a new group reads every result still kept
    "isolation.level": "read_committed",  # never results of aborted transactions
}
# what the handled-on-next semantics depend on (not overridable)
FIXED: dict[str, Any] = {"enable.auto.offset.store": False, "enable.auto.commit": True}


@functools.cache
def _codec() -> Codec:
    return Codec()


def decode_result(value: bytes, codec: Codec | None = None) -> InferenceResult:
    """One ``detections`` value (Avro single-object encoding, any shipped schema version)
    as an ``InferenceResult``; ``codec``: a ``RegistryCodec`` where the site uses a schema
    registry. DataError (``.code``: ``not_avro``, ``unknown_schema``, ``undecodable``...)
    when it is not one."""
    return (codec or _codec()).decode(value, InferenceResult)


class DetectionsConsumer:
    """Reads the site's results from Kafka as ``InferenceResult`` records, in a consumer
    group of your own (``group_id``: never a ``framewire-*`` group).

    Offsets: a result counts as handled when you ask for the next one (the next loop turn,
    ``poll()``) or call ``commit()``; only handled results' offsets are committed (every
    5 s, and on ``close()``). A result you hold when the program stops is read again by the
    group: at-least-once, so make the handling idempotent on ``frame_id``.

    ``librdkafka_props`` go to the consumer as they are (dotted names, through a dict:
    ``**{"security.protocol": "SASL_SSL"}``). ``schema_registry_url``: the site's, when it
    uses one (or ``codec``: a ``RegistryCodec`` with the registry's credentials).
    ``on_undecodable``: ``raise`` (DataError, the record left unhandled) or
    ``skip`` (logged, marked handled).
    """

    def __init__(self, bootstrap_servers: str, group_id: str, topic: str = TOPIC,
                 topic_prefix: str = "", *, schema_registry_url: str | None = None,
                 codec: Codec | None = None,
                 on_undecodable: Literal["raise", "skip"] = "raise",
                 **librdkafka_props: Any) -> None:
        if group_id.removeprefix(topic_prefix).startswith("framewire-"):
            raise ValueError(f"group id {group_id!r}: framewire-* groups are Framewire's own "
                             "services' (a stranger in them takes their partitions); pick "
                             "another")
        self.topic = topic_prefix + topic
        self.group_id = group_id
        self.last_message: Message | None = None  # the message of the last result given
        self._on_undecodable = on_undecodable
        self._codec = codec or make_codec(schema_registry_url)
        self._pending: Message | None = None  # given to the caller, not yet handled
        conf = {**DEFAULTS, **librdkafka_props, **FIXED,
                "bootstrap.servers": bootstrap_servers, "group.id": group_id}
        self._consumer = Consumer(conf)
        self._consumer.subscribe([self.topic])
        self._closed = False

    @classmethod
    def for_site(cls, settings: Settings, group_id: str, **librdkafka_props: Any) -> Self:
        """A consumer of the site ``settings`` describe (``load_settings()``): its brokers,
        topic prefix, ``kafka`` client settings (TLS, SASL), and schema registry."""
        from framewire.broker.client import client_config, consumer_defaults

        conf = client_config(settings, consumer_defaults(settings), **librdkafka_props)
        codec = make_codec(settings.schema_registry_url, settings.schema_registry_auth)
        return cls(conf.pop("bootstrap.servers"), group_id, topic_prefix=settings.topic_prefix,
                   codec=codec, **conf)

    def poll(self, timeout: float = 1.0) -> InferenceResult | None:
        """The next result, or None when none came within ``timeout`` seconds; the result
        returned before counts as handled."""
        self._handled()
        while True:
            msg = self._consumer.poll(timeout)
            if msg is None:
                return None
            if msg.error():
                raise KafkaException(msg.error())
            try:
                result = decode_result(msg.value(), self._codec)  # type: ignore[arg-type]
            except DataError as exc:
                where = f"{msg.topic()} [{msg.partition()}] @ {msg.offset()}"
                if self._on_undecodable == "raise":
                    raise DataError(exc.code, f"{where}: {exc.reason}") from exc
                log.warning("skipped an undecodable result", extra={
                    "at": where, "code": exc.code, "reason": exc.reason})
                self._consumer.store_offsets(msg)
                continue
            self.last_message = self._pending = msg
            return result

    def __iter__(self) -> Iterator[InferenceResult]:
        """Results for ever (until ``close()``), each handled when the next is asked for."""
        while not self._closed:
            result = self.poll(1.0)
            if result is not None:
                yield result

    def commit(self) -> None:
        """Mark the last result handled and commit at once (not waiting for the next
        periodic commit)."""
        self._handled()
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if "_NO_OFFSET" not in str(exc):  # nothing stored since the last commit
                raise

    def close(self) -> None:
        """Commit what was handled and leave the group (the result held is not handled)."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _handled(self) -> None:
        if self._pending is not None:
            self._consumer.store_offsets(self._pending)
            self._pending = None
