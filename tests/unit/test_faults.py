"""Poison pills and systemic faults (runtime/faults.py): a bad record is found and blamed only
when others succeed beside it; a fault of the system pauses and is reported; a record that
kills its process is dead-lettered after poison_pill_limit real crashes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from framewire.config import load_settings
from framewire.errors import DataError, SystemicError, TransientError
from framewire.runtime import Stage
from framewire.runtime.faults import CrashJournal, Held, RecordFaults
from framewire.runtime.heartbeat import Counters
from framewire.runtime.stop import StopSignal


class Flaky(Stage):
    """Doubles numbers; raises on the records in ``bad``, or on every record while ``down``."""

    name = "preprocess"
    input_topic = "frames.raw"
    input_type = object  # type: ignore[assignment]
    output_topic = "frames.ready"

    def __init__(self, bad=(), down=None, data_error_on=(), heal_after=None):
        super().__init__(load_settings())
        self.bad, self.down, self.data_error_on = set(bad), down, set(data_error_on)
        self.heal_after, self.calls = heal_after, []

    def process(self, records):
        self.calls.append(list(records))
        if self.heal_after is not None and len(self.calls) > self.heal_after:
            self.bad, self.down = set(), None
        if self.down is not None:
            raise self.down
        if self.bad & set(records):
            raise ValueError(f"boom on {sorted(self.bad & set(records))}")
        if self.data_error_on & set(records):
            raise DataError("corrupt_image", "not an image")
        return [r * 2 for r in records]


def held(records):
    return [Held("frames.raw", 0, i, f"f{r}") for i, r in enumerate(records)]


def faults(stage, limit=3, journal=None):
    settings = load_settings(poison_pill_limit=limit)
    counters = Counters()
    stop = StopSignal(install=False)
    return RecordFaults(stage, settings, counters, journal, stop), counters


def test_a_record_that_fails_while_others_succeed_is_dead_lettered_after_the_limit():
    stage = Flaky(bad={3})
    run, counters = faults(stage, limit=3)
    outcomes = run.process([1, 3, 5], held([1, 3, 5]))
    assert outcomes[0] == 2 and outcomes[2] == 10
    assert isinstance(outcomes[1], DataError) and outcomes[1].code == "retries_exhausted"
    assert "ValueError: boom on [3]" in outcomes[1].reason
    # the batch, then each record alone, then the bad one twice more: 3 attempts in all
    assert [c for c in stage.calls if c == [3]] == [[3]] * 3
    assert counters.faults == []


def test_a_data_error_from_a_whole_batch_is_found_by_trying_its_records_alone():
    stage = Flaky(data_error_on={4})
    run, _ = faults(stage)
    outcomes = run.process([2, 4, 6], held([2, 4, 6]))
    assert outcomes[0] == 4 and outcomes[2] == 12
    assert isinstance(outcomes[1], DataError) and outcomes[1].code == "corrupt_image"
    assert len(stage.calls) == 4  # the batch, then once each: a bad record is not retried


def test_every_record_of_a_batch_failing_is_a_systemic_fault_not_bad_data():
    stage = Flaky(down=ValueError("CUDA out of memory"))
    run, counters = faults(stage)
    with pytest.raises(SystemicError, match="every record fails with") as raised:
        run.process([1, 2, 3], held([1, 2, 3]))
    assert "ValueError: CUDA out of memory" in raised.value.fault
    assert counters.faults and counters.faults[0].startswith("systemic_fault: every record")
    stage.down = None  # the cause is fixed: the next batch succeeds and the fault clears
    assert run.process([1, 2, 3], held([1, 2, 3])) == [2, 4, 6]
    assert counters.faults == []


def test_a_transient_error_is_retried_by_the_loop_never_judged_even_mid_split():
    class Outage(Flaky):
        def process(self, records):
            if len(self.calls) >= 3:  # the batch failed, two records went through alone...
                self.calls.append(list(records))
                raise TransientError("database is locked")  # ... then the database went away
            return super().process(records)

    stage = Outage(bad={3})
    run, counters = faults(stage)
    with pytest.raises(TransientError, match="locked"):
        run.process([1, 2, 3, 4], held([1, 2, 3, 4]))
    assert counters.faults == []  # nothing judged, nothing dead-lettered: read again later


def test_bad_records_beside_a_systemic_fault_are_no_evidence_that_the_system_works():
    stage = Flaky(down=None, data_error_on={2})

    def process(records):  # out of memory on every record, except that 2 is corrupt
        stage.calls.append(list(records))
        if records == [2]:
            raise DataError("corrupt_image", "not an image")
        raise ValueError("CUDA out of memory")

    stage.process = process  # type: ignore[method-assign]
    run, _ = faults(stage)
    with pytest.raises(SystemicError, match="CUDA out of memory"):
        run.process([1, 2, 3], held([1, 2, 3]))


def test_a_stop_while_records_are_retried_judges_nothing():
    stage = Flaky(bad={3})
    run, _ = faults(stage, limit=5)
    run.stop.set()
    with pytest.raises(TransientError, match="stopped"):
        run.process([1, 3], held([1, 3]))


def test_a_lone_record_that_keeps_failing_pauses_rather_than_being_blamed():
    stage = Flaky(bad={7})
    run, counters = faults(stage, limit=2)
    with pytest.raises(SystemicError):
        run.process([7], held([7]))
    assert len(stage.calls) == 2 and counters.faults


def test_a_lone_record_that_fails_once_then_succeeds_is_processed():
    stage = Flaky(bad={7}, heal_after=1)
    run, _ = faults(stage)
    assert run.process([7], held([7])) == [14]


def test_a_systemic_error_raised_by_the_stage_pauses_at_once_with_its_fault():
    stage = Flaky(down=SystemicError("database is read-only (SQLSTATE 25006)"))
    run, counters = faults(stage)
    with pytest.raises(SystemicError, match="read-only"):
        run.process([1, 2], held([1, 2]))
    assert len(stage.calls) == 1
    assert counters.faults == ["systemic_fault: database is read-only (SQLSTATE 25006)"]


def test_a_stage_returning_the_wrong_number_of_outcomes_is_a_bug():
    class Short(Flaky):
        def process(self, records):
            return records[:-1]

    run, _ = faults(Short())
    with pytest.raises(RuntimeError, match="outcomes"):
        run.process([1, 2], held([1, 2]))


# A process that runs a stage on [1, 2, 3] and dies (os._exit, as a native crash or the OOM
# killer would end it) on record 2 unless that record was dead-lettered.
CRASHING = textwrap.dedent("""
    import os, sys
    from framewire.config import load_settings
    from framewire.runtime import Stage
    from framewire.runtime.faults import CrashJournal, Held, RecordFaults
    from framewire.runtime.heartbeat import Counters
    from pathlib import Path

    class Killer(Stage):
        name = "preprocess"; input_topic = "frames.raw"; input_type = object
        output_topic = "frames.ready"
        def process(self, records):
            if 2 in records:
                os._exit(70)
            return [r * 2 for r in records]

    journal = CrashJournal(Path(sys.argv[1]), "preprocess")
    journal.harvest()
    run = RecordFaults(Killer(load_settings()), load_settings(poison_pill_limit=3), Counters(),
                       journal)
    outcomes = run.process([1, 2, 3], [Held("frames.raw", 0, i, f"f{r}")
                                       for i, r in enumerate([1, 2, 3])])
    print([getattr(o, "code", o) for o in outcomes])
    journal.close()
""")


def test_a_record_that_kills_its_process_is_dead_lettered_as_crash_loop_after_the_limit(
        tmp_path):
    runs = []
    for _ in range(4):
        done = subprocess.run([sys.executable, "-c", CRASHING, str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        runs.append((done.returncode, done.stdout.strip()))
        if done.returncode == 0:
            break
    # dies with the batch, then alone on record 2 (1 and 3 go through), then once more;
    # the fourth process dead-letters record 2 without running it
    assert [code for code, _ in runs] == [70, 70, 70, 0], runs
    assert runs[-1][1] == "[2, 'crash_loop', 6]"
    journal = CrashJournal(tmp_path, "preprocess")
    journal.harvest()
    assert journal.counts == {}  # the dead-lettered record's count is forgotten
    journal.close()


def test_a_journal_is_dead_when_its_lock_is_free_whatever_pid_the_next_process_gets(tmp_path):
    alive = CrashJournal(tmp_path, "inference")
    alive.begin(held([1]))
    # a journal nobody holds the lock of: its process died (a restart may reuse its pid)
    (tmp_path / "inference.dead.inflight").write_text(Held("t", 0, 9, "f9").key + "\n")
    other = CrashJournal(tmp_path, "inference")
    other.harvest()
    assert other.counts == {Held("t", 0, 9, "f9").key: 1}  # the living journal is not read
    assert alive.path.exists()
    alive.close()
    other.close()


def test_a_journal_that_cannot_be_written_costs_crash_detection_not_the_stage(tmp_path):
    (tmp_path / "state").write_text("a file where the folder should be")
    journal = CrashJournal(tmp_path / "state", "preprocess")
    journal.harvest()
    run, counters = faults(Flaky(), journal=journal)
    assert run.process([1, 2], held([1, 2])) == [2, 4]
    assert [f.split(":")[0] for f in counters.faults] == ["crash_journal"]
    journal.close()


def test_a_clean_exit_blames_no_record(tmp_path):
    journal = CrashJournal(tmp_path, "inference")
    journal.begin(held([1, 2]))
    journal.end()
    journal.close()
    other = CrashJournal(tmp_path, "inference")
    other.harvest()
    assert other.counts == {}
    other.close()


def test_the_supervisor_reports_a_crash_loop_and_tells_the_restarted_process(tmp_path,
                                                                           monkeypatch):
    import time

    from framewire.ops.supervisor import Child, Supervisor
    from framewire.retry import Backoff

    monkeypatch.setenv("FRAMEWIRE_HOME", str(tmp_path))
    supervisor = Supervisor(load_settings(), services=[])
    log_path = tmp_path / "crasher.log"
    child = Child("crasher", [sys.executable, "-c", "import os, sys; "
                              "print('recent', os.environ['FRAMEWIRE_RECENT_CRASHES']); "
                              "sys.exit(3)"], log_path, backoff=Backoff(0.01, 0.01))
    supervisor.children = [child]
    supervisor._spawn(child)
    events: list[str] = []
    deadline = time.monotonic() + 30
    while not any("crash loop" in e for e in events) and time.monotonic() < deadline:
        events += supervisor.check()
        time.sleep(0.02)  # polling the supervisor, as `framewire run` does
    loop = [e for e in events if "crash loop" in e]
    assert loop and "exited 3 times" in loop[0] and "last code 3" in loop[0]
    assert events[0].startswith("crasher exited with code 3; restarting")
    child.process.wait(10)
    assert "recent 2" in log_path.read_text().splitlines()  # the third process knew of two
