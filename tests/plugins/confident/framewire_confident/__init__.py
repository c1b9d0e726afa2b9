"""A whole Framewire stage: keep only the detections scoring at least ``min_score``."""

from dataclasses import replace

from pydantic import Field

from framewire.config import StageSettings
from framewire.contracts import InferenceResult
from framewire.runtime import Stage, map_records
from framewire.topology import Output, StageSpec


class ConfidentSettings(StageSettings):
    """Its knobs: the runtime's (batch size, linger, replicas...) plus its own."""

    min_score: float = Field(0.5, ge=0, le=1, description="lowest score kept")


def keep_confident(result: InferenceResult, min_score: float) -> InferenceResult:
    """The pure logic: the same result with only its confident detections."""
    kept = [d for d in result.detections if d.score >= min_score]
    return replace(result, detections=kept)


STAGE = StageSpec(
    name="confident", entry="framewire_confident:ConfidentStage", settings=ConfidentSettings,
    input="detections", input_contract=InferenceResult,
    outputs=(Output("detections.confident", InferenceResult, retention="7d"),),
    summary="keeps the detections scoring at least min_score")


class ConfidentStage(Stage):
    """What the runtime runs: consume, decode, batch, produce and commit are its work."""

    spec = STAGE

    def process(self, records: list[InferenceResult]) -> list[InferenceResult | None]:
        min_score = self.batching.min_score
        return map_records(lambda r: keep_confident(r, min_score), records)
