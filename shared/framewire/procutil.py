"""Process-level settings: children that never outlive their parent, frame-friendly malloc,
the cores a process may use."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def die_with_parent() -> None:
    """``preexec_fn`` for Popen: the child gets SIGTERM when its parent dies (Linux only).

    Without it a supervisor killed with SIGKILL leaves the broker and services running,
    holding ports and consumer-group memberships.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc reuse freed frame-sized buffers instead of handing them back to the kernel.

    Decoded frames, model input blobs and encoded payloads are a few MB each, allocated and
    freed for every frame. By default glibc serves such blocks with mmap, or trims them off
    the heap when freed, so every frame pays hundreds of page faults (measured: ~300 per
    frame in inference) to get zeroed pages again. Blocks under ``mmap_threshold`` come from
    the heap, and up to ``trim_threshold`` of free heap is kept: the faults went to ~5 per
    frame and inference used ~5 % less CPU. True when glibc took the settings.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def usable_cores() -> int:
    """CPU cores this process may run on (affinity and cgroup quota), at least 1."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)
