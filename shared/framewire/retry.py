"""Backoff between retries of transient failures; no Kafka here, so any module may use it."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter for retrying transient failures."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 10.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * 2**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0
