"""Energy: RAPL totals across counter wraps, and joules per 1,000 frames in framewire status."""

from __future__ import annotations

from pathlib import Path

import pytest

from framewire.contracts import ServiceHeartbeat, utcnow
from framewire.ops.status import ServiceStatus
from framewire.telemetry.energy import EnergyCounters, EnergyMeter


def rapl(root: Path, energy_uj: int, range_uj: int = 10_000_000) -> None:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")


def test_host_joules_keep_rising_across_a_counter_wrap(tmp_path: Path) -> None:
    counters = EnergyCounters(rapl=EnergyMeter(tmp_path))
    rapl(tmp_path, 8_000_000)
    assert counters.host_joules() == 0.0
    rapl(tmp_path, 9_500_000)
    assert counters.host_joules() == pytest.approx(1.5)
    rapl(tmp_path, 500_000)  # wrapped at 10 J: +1 J more
    assert counters.host_joules() == pytest.approx(2.5)


def test_no_rapl_and_no_gpu_mean_no_reading(tmp_path: Path) -> None:
    counters = EnergyCounters(rapl=EnergyMeter(tmp_path / "missing"))
    assert counters.host_joules() is None and counters.gpu_joules() is None


def beat(host: str, pid: int, out_per_s: float | None, host_watts: float | None,
         gpu_watts: float | None = None) -> ServiceHeartbeat:
    return ServiceHeartbeat(
        service="inference", instance=f"{host}:{pid}", host=host, pid=pid, version="0.1.0",
        sent_at=utcnow(), state="running", partitions=["0"], records_in=1, records_out=1,
        dead_lettered=0, produced_offsets={}, out_per_s=out_per_s, host_watts=host_watts,
        gpu_watts=gpu_watts)


def test_each_host_counts_its_power_once_against_the_frames_of_all_its_processes() -> None:
    status = ServiceStatus("inference", instances=[
        # two replicas on host a read the same package counter (about 100 W)
        beat("a", 1, 10.0, 99.0, gpu_watts=210.0), beat("a", 2, 15.0, 101.0, gpu_watts=230.0),
        beat("b", 3, 5.0, 50.0),  # host b: CPU only
    ])
    # (100 + 50) W over 30 frames/s
    assert status.joules_per_1000_frames("host") == pytest.approx(5000.0)
    # the GPU on host a: 220 W over the 25 frames/s of the replicas that use it
    assert status.joules_per_1000_frames("gpu") == pytest.approx(8800.0)


def test_without_readings_there_is_no_energy_figure() -> None:
    status = ServiceStatus("storage", instances=[beat("a", 1, 20.0, None)])
    assert status.joules_per_1000_frames("host") is None
    assert status.joules_per_1000_frames("gpu") is None
