"""Preprocess: decode, check quality, letterbox to the model's input size."""

from framewire.config import PreprocessSettings
from framewire.contracts import FrameCaptured, FramePreprocessed
from framewire.topology import Output, StageSpec

STAGE = StageSpec(
    name="preprocess", entry="framewire.services.preprocess.stage:PreprocessStage",
    input="frames.raw", input_contract=FrameCaptured, settings=PreprocessSettings,
    outputs=(Output("frames.ready", FramePreprocessed, retention="1h"),),
    follows=("control",),  # the model: switched at run time (framewire model switch)
    summary="decodes, measures quality and letterboxes frames to the model's input size")
