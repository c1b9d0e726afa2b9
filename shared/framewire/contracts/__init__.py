"""The contracts: the typed records that flow between stages, and their Avro encoding.

``framewire.contracts`` re-exports the record types (``records``); ``codec`` turns them into
bytes and back against the schema versions shipped in ``schemas/``.
"""

from framewire.contracts.records import (
    CAMERA_ID_PATTERN,
    CONTRACTS,
    Contract,
    DeadLetter,
    Detection,
    FrameCaptured,
    FramePreprocessed,
    InferenceResult,
    ServiceHeartbeat,
    check_camera_id,
    utcnow,
)

__all__ = ["CAMERA_ID_PATTERN", "CONTRACTS", "Contract", "DeadLetter", "Detection",
           "FrameCaptured", "FramePreprocessed", "InferenceResult", "ServiceHeartbeat",
           "check_camera_id", "utcnow"]
