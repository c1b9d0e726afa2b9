"""Ingest back-pressure: per-camera rate caps and bounded buffers with drop policies."""

from __future__ import annotations

import threading

import pytest

from framewire.capture.backpressure import CameraBuffer, RateCap


def test_rate_cap_lets_through_at_most_fps_frames_per_second():
    cap = RateCap(5.0)
    arrivals = [i * 0.05 for i in range(40)]  # 20 fps for 2 s
    passed = [t for t in arrivals if cap.allow(t)]
    assert len(passed) == 10
    assert all(b - a >= 0.2 - 1e-9 for a, b in zip(passed, passed[1:], strict=False))


def test_rate_cap_does_not_burst_after_a_pause():
    cap = RateCap(10.0)
    assert cap.allow(0.0)
    assert cap.allow(5.0)  # after a long pause one frame passes ...
    assert not cap.allow(5.01)  # ... but no banked credit lets a burst through


def test_no_cap_lets_everything_through():
    cap = RateCap(None)
    assert all(cap.allow(0.0) for _ in range(100))


@pytest.mark.parametrize(("policy", "kept"), [
    ("drop_oldest", [2, 3, 4]),
    ("drop_newest", [0, 1, 2]),
])
def test_a_full_buffer_drops_by_policy_and_counts_each_drop(policy, kept):
    buf: CameraBuffer[int] = CameraBuffer(3, policy)
    stop = threading.Event()
    results = [buf.put(i, stop) for i in range(5)]
    assert results.count(False) == 2
    assert buf.dropped == 2
    assert [buf.take() for _ in range(3)] == kept
    assert buf.take() is None


def test_block_policy_waits_for_room_and_loses_nothing():
    buf: CameraBuffer[int] = CameraBuffer(2, "block")
    stop = threading.Event()
    taken: list[int] = []

    def consumer():
        while len(taken) < 10:
            item = buf.take()
            if item is not None:
                taken.append(item)
            else:
                stop.wait(0.001)

    thread = threading.Thread(target=consumer)
    thread.start()
    for i in range(10):
        assert buf.put(i, stop)
    thread.join(10)
    assert taken == list(range(10))
    assert buf.dropped == 0


def test_block_policy_gives_up_and_counts_when_stopping():
    buf: CameraBuffer[int] = CameraBuffer(1, "block")
    stop = threading.Event()
    buf.put(0, stop)
    stop.set()
    assert buf.put(1, stop) is False
    assert buf.dropped == 1
