"""A test stage for the hostile-records suite: passes results on to ``detections.checked``, but
its process dies (``os._exit``, as the OOM killer or a native crash would end it) on the result of
frame ``cam-crash-bad``, and it raises on frame ``cam-poison-bad`` (a bug only that record
meets)."""

from __future__ import annotations

import os

from framewire.contracts import InferenceResult
from framewire.runtime import Stage
from framewire.topology import Output, StageSpec

STAGE = StageSpec(
    name="checker", entry="tests.integration.hostile_stage:CheckerStage",
    input="detections", input_contract=InferenceResult,
    outputs=(Output("detections.checked", InferenceResult, retention="1h"),),
    summary="passes results on; dies on one frame, raises on another (tests only)")


class CheckerStage(Stage):
    spec = STAGE

    def process(self, records: list[InferenceResult]) -> list[InferenceResult | None]:
        frames = {r.frame_id for r in records}
        if "cam-crash-bad" in frames:
            os._exit(70)
        if "cam-poison-bad" in frames:
            raise ValueError("cannot check a poisoned result")
        return list(records)
