"""The gateway: Framewire's HTTP API (``/api/v1``), served by uvicorn in its own process."""

from framewire.config import GatewaySettings
from framewire.topology import StageSpec

# A source-like declaration: it reads no topic, so the runtime's loop does not run it; its
# ``main`` serves HTTP until stopped. What its routes touch in Kafka, and so what its principal
# may do under sasl_ssl: pushed frames go to ``frames.raw`` through ingest's code (ingest stays
# that topic's one declared writer), with each camera's privacy mode from the cameras topic it
# follows; ``/cameras`` changes that topic; ``/deadletters`` and ``/status`` read the dead
# letters and heartbeats; ``/deadletters/replay`` re-publishes letters to the stages' inputs;
# ``/model`` changes the control topic; ``/reprocess`` reads frames.raw's retained range and
# produces it again.
STAGE = StageSpec(
    name="gateway", entry="framewire.services.gateway.service:main", settings=GatewaySettings,
    summary="HTTP API: push frames, read results and their live stream, dead letters, status",
    follows=("cameras",), manages=("cameras", "control"),
    reads=("deadletter", "status", "frames.raw"),
    writes=("frames.raw",), replays=True)
