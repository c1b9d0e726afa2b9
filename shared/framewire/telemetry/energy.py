"""Energy counters where the machine exposes them: RAPL (CPU packages) and NVML (GPUs).

``make bench`` reads them around its phases; every service reads them for its heartbeat,
so ``framewire status`` and the metrics give joules per 1,000 frames on a live site.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass
class EnergyMeter:
    """Package energy from RAPL (``/sys/class/powercap/intel-rapl:N/energy_uj``), if readable."""

    root: Path = RAPL_ROOT

    def zones(self) -> list[Path]:
        """Top-level RAPL zones (packages), not their sub-zones (cores, dram)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1)

    def read_joules(self) -> dict[str, tuple[float, float]] | None:
        """Per zone: (energy counter, counter range) in joules; None when unreadable."""
        readings = {}
        for zone in self.zones():
            try:
                energy = int((zone / "energy_uj").read_text()) / 1e6
                top = int((zone / "max_energy_range_uj").read_text()) / 1e6
            except (OSError, ValueError):
                return None
            readings[zone.name] = (energy, top)
        return readings or None

    @staticmethod
    def joules_between(before: dict[str, tuple[float, float]] | None,
                       after: dict[str, tuple[float, float]] | None) -> float | None:
        """Joules used between two readings (counters wrap at their range)."""
        if before is None or after is None:
            return None
        total = 0.0
        for zone, (start, top) in before.items():
            if zone not in after:
                return None
            end = after[zone][0]
            total += end - start if end >= start else end + top - start
        return total


class GpuEnergyMeter:
    """Energy the first GPU has used (NVML's counter, in joules), if NVML is there."""

    def __init__(self) -> None:
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML library, no GPU, no driver: energy is not readable
            self._handle = None

    def read(self) -> float | None:
        if self._handle is None:
            return None
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) / 1000
        except Exception:  # an older GPU without the counter
            return None


@dataclass
class EnergyCounters:
    """Monotonic joule totals of this host's CPU packages and first GPU, wraps undone.

    A reading is None where its counter is not readable (no RAPL, no NVML, no GPU).
    """

    rapl: EnergyMeter = field(default_factory=EnergyMeter)
    gpu: GpuEnergyMeter | None = None
    _last: dict[str, tuple[float, float]] | None = None
    _host_j: float = 0.0

    def host_joules(self) -> float | None:
        """Joules the CPU packages used since the first call (counter wraps undone)."""
        now = self.rapl.read_joules()
        if now is None:
            return None
        if self._last is not None:
            self._host_j += EnergyMeter.joules_between(self._last, now) or 0.0
        self._last = now
        return self._host_j

    def gpu_joules(self) -> float | None:
        return self.gpu.read() if self.gpu is not None else None
