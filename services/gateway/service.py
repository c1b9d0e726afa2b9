"""The gateway process: Framewire's HTTP API until stopped."""

from __future__ import annotations

from framewire.config import Settings
from framewire.runtime import StopSignal


def main(settings: Settings, stop: StopSignal | None = None, demo: bool = False) -> None:
    """Serve the API on ``gateway.host``:``gateway.port`` (``demo`` changes nothing here)."""
    from framewire.gateway.server import serve

    serve(settings, stop)
