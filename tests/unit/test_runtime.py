"""The runtime's pure parts: batch isolation, per-record errors, backoff."""

from __future__ import annotations

import pytest

from framewire.config import load_settings
from framewire.errors import DataError, TransientError
from framewire.retry import Backoff
from framewire.runtime import Stage, map_records
from framewire.runtime.loop import process_isolating


class Doubler(Stage):
    name = "preprocess"
    input_topic = "frames.raw"
    input_type = object  # type: ignore[assignment]
    output_topic = "frames.ready"

    def __init__(self, fail_on=None, transient=False):
        super().__init__(load_settings())
        self.fail_on, self.transient, self.calls = fail_on, transient, 0

    def process(self, records):
        self.calls += 1
        if self.transient:
            raise TransientError("db away")
        if self.fail_on is not None and self.fail_on in records:
            raise ValueError("boom")
        return [r * 2 for r in records]


def test_map_records_turns_a_data_error_into_that_records_outcome():
    def check(x):
        if x < 0:
            raise DataError("negative", "x is negative")
        return x

    outcomes = map_records(check, [1, -1, 2])
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], DataError) and outcomes[1].code == "negative"


def test_a_failing_batch_is_retried_record_by_record_so_only_the_bad_one_is_rejected():
    stage = Doubler(fail_on=3)
    outcomes = process_isolating(stage, [1, 3, 5])
    assert outcomes[0] == 2 and outcomes[2] == 10
    assert isinstance(outcomes[1], DataError)
    assert outcomes[1].code == "stage_error"
    assert "ValueError" in outcomes[1].reason


def test_transient_errors_are_not_dead_lettered_but_raised_for_retry():
    with pytest.raises(TransientError):
        process_isolating(Doubler(transient=True), [1, 2])


def test_a_stage_returning_the_wrong_number_of_outcomes_is_a_bug():
    class Short(Doubler):
        def process(self, records):
            return records[:-1]

    with pytest.raises(RuntimeError, match="outcomes"):
        process_isolating(Short(), [1, 2])


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
    from framewire.metrics import CpuPerFrame

    cost = CpuPerFrame(window_s=60.0)
    assert cost.sample(0.0, 5.0, 0) is None  # start-up: 5 s of CPU, nothing out yet
    assert cost.sample(10.0, 5.0, 0) is None
    assert cost.sample(20.0, 6.0, 100) == pytest.approx(10.0)  # 1 s over 100 records
    # once the start-up samples are a window old, only the work since t=20 counts:
    # 2 CPU-s over 300 records
    cost.sample(70.0, 7.0, 200)
    cost.sample(80.0, 7.5, 300)
    assert cost.sample(90.0, 8.0, 400) == pytest.approx(2.0 * 1000 / 300)
