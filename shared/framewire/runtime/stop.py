"""The stop signal: SIGTERM or SIGINT asks the loop to finish its batch, commit and leave."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


class StopSignal:
    """Set on SIGTERM or SIGINT: the loop finishes its batch, commits and leaves."""

    def __init__(self, install: bool = True) -> None:
        self.event = threading.Event()
        if install and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        self.event.set()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)
