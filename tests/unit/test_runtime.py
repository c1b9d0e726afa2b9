"""The runtime's pure parts: per-record errors, backoff (batch isolation: test_faults.py)."""

from __future__ import annotations

import pytest

from framewire.config import load_settings
from framewire.errors import DataError
from framewire.retry import Backoff
from framewire.runtime import Stage, map_records


class Doubler(Stage):
    name = "preprocess"
    input_topic = "frames.raw"
    input_type = object  # type: ignore[assignment]
    output_topic = "frames.ready"

    def __init__(self):
        super().__init__(load_settings())

    def process(self, records):
        return [r * 2 for r in records]


def test_map_records_turns_a_data_error_into_that_records_outcome():
    def check(x):
        if x < 0:
            raise DataError("negative", "x is negative")
        return x

    outcomes = map_records(check, [1, -1, 2])
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], DataError) and outcomes[1].code == "negative"


def test_backoff_grows_exponentially_up_to_the_cap_and_resets():
    b = Backoff(first_s=1.0, cap_s=5.0)
    delays = [b.next_delay() for _ in range(6)]
    assert 0.8 <= delays[0] <= 1.2
    assert 1.6 <= delays[1] <= 2.4
    assert all(d <= 6.0 for d in delays)
    assert delays[-1] >= 4.0
    b.reset()
    assert b.next_delay() <= 1.2


def test_cpu_cost_per_1000_frames_is_measured_over_the_recent_window():
    from framewire.telemetry.metrics import CostWindow

    window = CostWindow(window_s=60.0)

    def cost(now: float, cpu: float, out: int) -> float | None:
        return window.sample(now, cpu, out).cpu_s_per_1000_frames

    assert cost(0.0, 5.0, 0) is None  # start-up: 5 s of CPU, nothing out yet
    assert cost(10.0, 5.0, 0) is None
    assert cost(20.0, 6.0, 100) == pytest.approx(10.0)  # 1 s over 100 records
    # once the start-up samples are a window old, only the work since t=20 counts:
    # 2 CPU-s over 300 records
    cost(70.0, 7.0, 200)
    cost(80.0, 7.5, 300)
    assert cost(90.0, 8.0, 400) == pytest.approx(2.0 * 1000 / 300)


def test_power_and_rate_come_from_the_same_window_and_stay_unknown_without_counters():
    from framewire.telemetry.metrics import CostWindow

    window = CostWindow(window_s=60.0)
    first = window.sample(0.0, 0.0, 0, host_j=1000.0, gpu_j=None)
    assert (first.out_per_s, first.host_watts, first.gpu_watts) == (None, None, None)
    later = window.sample(10.0, 1.0, 250, host_j=1650.0, gpu_j=None)
    assert later.out_per_s == pytest.approx(25.0)
    assert later.host_watts == pytest.approx(65.0)  # 650 J in 10 s
    assert later.gpu_watts is None  # no GPU counter: unknown, not zero


class RecordingConsumer:
    """Stands in for the consumer's commit and seek: what the loop asked for, in order."""

    def __init__(self):
        self.commits, self.seeks = [], []

    def commit(self, offsets, asynchronous):
        self.commits.append(({(o.topic, o.partition): o.offset for o in offsets}, asynchronous))

    def seek(self, tp):
        self.seeks.append((tp.topic, tp.partition, tp.offset))


@pytest.fixture
def runner(tmp_path, monkeypatch):
    from framewire.runtime.loop import StageRunner
    from framewire.runtime.stop import StopSignal

    monkeypatch.setenv("FRAMEWIRE_HOME", str(tmp_path))
    settings = load_settings(bootstrap_servers="127.0.0.1:9", commit_interval_ms=60_000)
    run = StageRunner(Doubler(), settings, StopSignal(install=False))
    run.consumer.close()
    run.consumer = RecordingConsumer()
    run._outage = False  # closing the unconnected consumer may have reported "all brokers down"
    run.output.serve_acknowledgements = lambda wait_s=0.0: None
    run.stop.wait = lambda timeout: False  # no backoff sleep in a unit test
    yield run
    run.output.producer.purge()


def in_flight(run, offsets, pending=0, failures=()):
    from framewire.runtime.inflight import InFlight

    batch = InFlight(offsets)
    batch.delivery.pending, batch.delivery.failures = pending, list(failures)
    run.in_flight.append(batch)
    return batch


def test_offsets_are_committed_only_up_to_the_first_batch_still_awaiting_acks(runner):
    first = in_flight(runner, {("t", 0): (0, 4)}, pending=1)
    in_flight(runner, {("t", 1): (0, 2)})
    in_flight(runner, {("t", 0): (5, 9)})
    runner._settle(idle=True)
    assert runner.consumer.commits == []  # the oldest batch is not acknowledged yet
    first.delivery.pending = 0
    runner._settle(idle=True)
    assert runner.consumer.commits == [({("t", 0): 10, ("t", 1): 3}, True)]
    assert not runner.in_flight


def test_a_busy_loop_commits_at_most_once_per_commit_interval(runner):
    in_flight(runner, {("t", 0): (0, 0)})
    runner._settle(idle=False)
    assert len(runner.consumer.commits) == 1  # the first commit is due at once
    in_flight(runner, {("t", 0): (1, 1)})
    runner._settle(idle=False)
    assert len(runner.consumer.commits) == 1  # within the interval: kept for later
    runner._settle(idle=True)  # idle: committed at once
    assert runner.consumer.commits[-1] == ({("t", 0): 2}, True)


def test_a_failed_acknowledgement_rewinds_that_batch_and_every_later_one(runner):
    in_flight(runner, {("t", 0): (0, 4)})
    in_flight(runner, {("t", 0): (5, 6), ("t", 2): (7, 7)}, failures=["t: timed out"])
    in_flight(runner, {("t", 0): (7, 9), ("t", 1): (3, 3)})
    runner._settle(idle=True)
    assert runner.consumer.commits == [({("t", 0): 5}, True)]  # only what precedes the failure
    assert sorted(runner.consumer.seeks) == [("t", 0, 5), ("t", 1, 3), ("t", 2, 7)]
    assert not runner.in_flight


def test_stopping_waits_for_acks_and_commits_synchronously(runner):
    in_flight(runner, {("t", 0): (0, 4)})
    runner._drain(timeout_s=1.0)
    assert runner.consumer.commits == [({("t", 0): 5}, False)]


def test_consumers_fetch_ahead_about_two_batches_per_partition():
    from framewire.runtime.loop import prefetch_limits

    assert prefetch_limits(8)["queued.min.messages"] == 16
    assert prefetch_limits(64)["queued.min.messages"] == 128
    assert prefetch_limits(1)["queued.min.messages"] == 16  # never below 16
