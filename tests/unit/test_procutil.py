"""Process-level settings: glibc keeps freed frame buffers instead of faulting them in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# 40 frames' worth of buffers: eight of about 1 MB alive together (a decoded frame, its
# letterboxed copy, the model's input blob, payloads...), then all freed; prints the minor
# page faults the loop cost
_ALLOCATE = """
import resource, sys
import numpy as np
from framewire.procutil import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
def frame():
    return [np.ones((1 << 20) + 4096 * i, np.uint8) for i in range(8)]
frame()  # the first one faults in either case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    frame()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _ALLOCATE, mode], capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_frame_buffers_are_reused_without_page_faults() -> None:
    tuned, tuned_faults = faults("tuned")
    _, default_faults = faults("default")
    assert tuned == "True"
    # by default freed memory goes back to the kernel: thousands of faults a frame
    assert default_faults > 40 * 1000
    assert tuned_faults < default_faults / 20
