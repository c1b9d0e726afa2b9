"""Inference: the model on micro-batches of letterboxed frames, boxes in frame pixels."""

from framewire.config import InferenceSettings
from framewire.contracts import FramePreprocessed, InferenceResult
from framewire.topology import Output, StageSpec

STAGE = StageSpec(
    name="inference", entry="framewire.services.inference.stage:InferenceStage",
    input="frames.ready", input_contract=FramePreprocessed, settings=InferenceSettings,
    outputs=(Output("detections", InferenceResult, retention="30d"),),
    follows=("control",),  # the model: switched at run time (framewire model switch)
    summary="runs the detection model (ONNX Runtime, CPU or GPU) on micro-batches")
