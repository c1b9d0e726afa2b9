"""Per-camera pacing and bounded buffering: what ingest does when the pipeline falls behind."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Policy = Literal["drop_oldest", "drop_newest", "block"]


class RateCap:
    """Lets through at most ``fps`` frames a second; the rest are skipped (and counted)."""

    def __init__(self, fps: float | None) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self.next_due = float("-inf")

    def allow(self, now: float) -> bool:
        """True when a frame arriving at ``now`` (monotonic seconds) may pass."""
        if now + 1e-9 < self.next_due:
            return False
        # stay on the grid, but never bank credit for a long pause (no bursts after it)
        late = now - self.next_due >= self.interval
        self.next_due = (now if late else self.next_due) + self.interval
        return True


class CameraBuffer(Generic[T]):
    """Frames of one camera waiting to be published, at most ``size``, with a drop policy."""

    def __init__(self, size: int, policy: Policy) -> None:
        self.size, self.policy = size, policy
        self.items: deque[T] = deque()
        self.dropped = 0
        self.cond = threading.Condition()

    def put(self, item: T, stop: threading.Event) -> bool:
        """Queue a frame; False when it (or, for drop_oldest, an older one) was dropped."""
        with self.cond:
            if len(self.items) >= self.size:
                if self.policy == "drop_newest":
                    self.dropped += 1
                    return False
                if self.policy == "drop_oldest":
                    self.items.popleft()
                    self.dropped += 1
                    self.items.append(item)
                    return False
                while len(self.items) >= self.size and not stop.is_set():
                    self.cond.wait(0.1)
                if stop.is_set():
                    self.dropped += 1
                    return False
            self.items.append(item)
            return True

    def take(self) -> T | None:
        """The oldest waiting frame, or None."""
        with self.cond:
            if not self.items:
                return None
            item = self.items.popleft()
            self.cond.notify()
            return item

    def __len__(self) -> int:
        return len(self.items)
