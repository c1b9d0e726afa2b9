"""The analytics process: one faust-streaming worker until stopped."""

from __future__ import annotations

from framewire.config import Settings
from framewire.runtime import StopSignal


def main(settings: Settings, stop: StopSignal | None = None, demo: bool = False) -> None:
    """Run one analytics worker (``demo`` changes nothing here); more join its group."""
    from framewire.analytics.app import run

    run(settings, stop)
