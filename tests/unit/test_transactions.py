"""exactly_once: a transactional producer call that never returns does not stall the stage."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from framewire.runtime import transactions
from framewire.runtime.transactions import ProducerHung, Transactions


class BlockingProducer:
    """send_offsets_to_transaction blocks until released, as librdkafka can when the group
    coordinator's broker dies."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def send_offsets_to_transaction(self, offsets: list, metadata: object,
                                    timeout: float) -> None:
        self.calls += 1
        self.release.wait(30)


class FailingProducer:
    def send_offsets_to_transaction(self, offsets: list, metadata: object,
                                    timeout: float) -> None:
        raise RuntimeError("coordinator said no")


def transactions_with(producer: object) -> Transactions:
    """Transactions over stand-ins: the producer given, a consumer with group metadata."""
    output: Any = SimpleNamespace(producer=producer)
    consumer: Any = SimpleNamespace(consumer_group_metadata=lambda: "meta")
    settings: Any = SimpleNamespace(ack_timeout_s=1.0)
    return Transactions(output, consumer, settings)


def test_a_send_offsets_call_that_never_returns_is_given_up_as_producer_hung(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "SEND_OFFSETS_MARGIN_S", 0.1)
    producer = BlockingProducer()
    try:
        with pytest.raises(ProducerHung, match="did not return"):
            transactions_with(producer).send_offsets([], 0.1)
        assert producer.calls == 1
    finally:
        producer.release.set()


def test_an_error_of_send_offsets_reaches_the_loop_unchanged() -> None:
    with pytest.raises(RuntimeError, match="coordinator said no"):
        transactions_with(FailingProducer()).send_offsets([], 1.0)
