"""The contracts: the typed records that flow between stages, and their Avro encoding.

``framewire.contracts`` re-exports the record types (``records``); ``codec`` turns them into
bytes and back against the schema versions shipped in ``schemas/``, reading any of them as
the newest (``UPGRADES`` bridge what Avro schema resolution cannot).
"""

from framewire.contracts.records import (
    CAMERA_ID_PATTERN,
    CONTRACTS,
    HEADER_FIELDS,
    UPGRADES,
    Contract,
    DeadLetter,
    Detection,
    FrameCaptured,
    FrameHeader,
    FramePreprocessed,
    FrameRecord,
    InferenceResult,
    ServiceHeartbeat,
    Upgrade,
    check_camera_id,
    utcnow,
)

__all__ = ["CAMERA_ID_PATTERN", "CONTRACTS", "HEADER_FIELDS", "UPGRADES", "Contract",
           "DeadLetter", "Detection", "FrameCaptured", "FrameHeader", "FramePreprocessed",
           "FrameRecord", "InferenceResult", "ServiceHeartbeat", "Upgrade", "check_camera_id",
           "utcnow"]
