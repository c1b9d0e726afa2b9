"""What the benchmark runs on: the machine's description, per-process CPU time, RAPL and
NVML energy."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from framewire.procutil import usable_cores
from framewire.telemetry.energy import EnergyMeter, GpuEnergyMeter

__all__ = ["EnergyMeter", "GpuEnergyMeter"]  # the benchmark's meters live with the services

NOT_READABLE = "not readable here"


def cpu_seconds_from_stat(text: str, ticks_per_s: int) -> float:
    """utime + stime of a process from the text of ``/proc/PID/stat``, in seconds."""
    # comm (field 2) may hold spaces and parentheses: fields start after the last ')'
    rest = text.rpartition(")")[2].split()
    if len(rest) < 13:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_s


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return cpu_seconds_from_stat(text, os.sysconf("SC_CLK_TCK"))


def memory_from_status(text: str) -> tuple[float, float]:
    """(resident, peak resident) memory in MiB from the text of ``/proc/PID/status``."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024  # kB
    if len(found) != 2:
        raise ValueError("no VmRSS and VmHWM lines: not the text of /proc/PID/status")
    return found["VmRSS"], found["VmHWM"]


def process_memory_mib(pid: int) -> tuple[float, float] | None:
    """(resident, peak resident) MiB of a live process; None when it is gone."""
    try:
        return memory_from_status(Path(f"/proc/{pid}/status").read_text())
    except (OSError, ValueError):
        return None


def busy_seconds_from_proc_stat(text: str, ticks_per_s: int) -> float:
    """CPU-seconds all cores spent busy (user, nice, system, irq, softirq, steal) since boot."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                int(x) for x in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / ticks_per_s
    raise ValueError("no 'cpu ' line: not the text of /proc/stat")


def system_busy_seconds() -> float | None:
    """CPU-seconds the whole machine has been busy; None where /proc/stat is unreadable."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    return busy_seconds_from_proc_stat(text, os.sysconf("SC_CLK_TCK"))


def other_cores(busy_before: float | None, busy_after: float | None, ours_s: float,
                wall_s: float) -> float | None:
    """Cores kept busy by processes outside the benchmark during a window (noise)."""
    if busy_before is None or busy_after is None or wall_s <= 0:
        return None
    return round(max(0.0, (busy_after - busy_before - ours_s) / wall_s), 2)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def gpu_description() -> str:
    """Name, memory and driver of each NVIDIA GPU (``nvidia-smi``), or "none"."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return "none"
    return "; ".join(line.strip() for line in done.stdout.splitlines() if line.strip()) or "none"


def machine_description(repo: Path) -> dict[str, Any]:
    """CPU, cores, memory, OS, library versions and the code's commit."""
    import cv2
    import numpy
    import onnxruntime

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
        "gpu": gpu_description(),
        "rapl": "readable" if EnergyMeter().read_joules() is not None else NOT_READABLE,
    }
    info.update(_git_state(repo))
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for people: CPU, cores, memory, OS."""
    return (f"{info.get('cpu', '?')}, {info.get('usable_cores', '?')} usable cores "
            f"({info.get('logical_cpus', '?')} logical), {info.get('memory_gib', '?')} GiB, "
            f"{info.get('os', '?')}, Python {info.get('python', '?')}, "
            f"ONNX Runtime {info.get('onnxruntime', '?')}, OpenCV {info.get('opencv', '?')}, "
            f"GPU {info.get('gpu', 'none')}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git_state(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
