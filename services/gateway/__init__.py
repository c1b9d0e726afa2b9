"""The gateway: Framewire's HTTP API (``/api/v1``), served by uvicorn in its own process."""

from framewire.config import GatewaySettings
from framewire.topology import StageSpec

# A source-like declaration: it reads no topic, so the runtime's loop does not run it; its
# ``main`` serves HTTP until stopped. Pushed frames go to ``frames.raw`` through ingest's code,
# which stays that topic's one declared writer.
STAGE = StageSpec(
    name="gateway", entry="framewire.services.gateway.service:main", settings=GatewaySettings,
    summary="HTTP API: push frames, read results and their live stream, dead letters, status")
