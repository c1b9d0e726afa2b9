"""The Python SDK: Framewire's gateway over HTTP, and its results straight from Kafka.

``Client(url, token)`` pushes frames, reads results, their frames and live stream, cameras,
dead letters, traces and status (``framewire.client.api``); ``DetectionsConsumer`` and
``decode_result`` read the ``detections`` topic with the shipped schemas
(``framewire.client.detections``). See docs/sdk.md.
"""

from framewire.client.api import Cameras, Client, image_type
from framewire.client.detections import DetectionsConsumer, decode_result
from framewire.client.errors import (
    Forbidden,
    FramewireAPIError,
    NotFound,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from framewire.client.models import (
    Camera,
    DeadLetterReport,
    ReplayOutcome,
    Result,
    Span,
    Trace,
)
from framewire.client.stream import ResultStream
from framewire.contracts import Detection, InferenceResult

__all__ = ["Camera", "Cameras", "Client", "DeadLetterReport", "Detection", "DetectionsConsumer",
           "FramewireAPIError", "Forbidden", "InferenceResult", "NotFound", "ReplayOutcome",
           "Result", "ResultStream", "Span", "Trace", "Unauthorized", "Unavailable",
           "Unreachable", "decode_result", "image_type"]
