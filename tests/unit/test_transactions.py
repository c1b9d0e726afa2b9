"""exactly_once: a transactional producer call that never returns does not stall the stage."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from framewire.runtime import loop
from framewire.runtime.loop import ProducerHung, StageRunner


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


def runner_with(producer: object) -> SimpleNamespace:
    return SimpleNamespace(publisher=SimpleNamespace(producer=producer),
                           consumer=SimpleNamespace(consumer_group_metadata=lambda: "meta"))


def test_a_send_offsets_call_that_never_returns_is_given_up_as_producer_hung(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "SEND_OFFSETS_MARGIN_S", 0.1)
    producer = BlockingProducer()
    try:
        with pytest.raises(ProducerHung, match="did not return"):
            StageRunner._send_offsets(runner_with(producer), [], 0.1)  # type: ignore[arg-type]
        assert producer.calls == 1
    finally:
        producer.release.set()


def test_an_error_of_send_offsets_reaches_the_loop_unchanged() -> None:
    with pytest.raises(RuntimeError, match="coordinator said no"):
        StageRunner._send_offsets(runner_with(FailingProducer()), [], 1.0)  # type: ignore[arg-type]
