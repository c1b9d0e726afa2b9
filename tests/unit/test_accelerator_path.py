"""The accelerator path, run on the CPU provider: pixels normalised in the model, batches
padded to fixed sizes, IO binding, JPEG decoding on threads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as samples

from bench.phases import prepared_frames
from framewire.config import load_settings
from framewire.errors import DataError
from framewire.models.manifest import load_manifest
from framewire.pixels.letterbox import letterbox
from framewire.services.inference import models
from framewire.services.inference.accel import batch_buckets, bucket_for, provider_options
from framewire.services.inference.models import Detector
from framewire.services.inference.stage import InferenceStage

CPU = ["CPUExecutionProvider"]


def boxed_photos() -> list[np.ndarray]:
    photos = [samples.astronaut(), samples.coffee(), samples.astronaut()]
    return [letterbox(np.ascontiguousarray(rgb[..., ::-1]), 640, 384)[0] for rgb in photos]


def test_batch_buckets_are_powers_of_two_then_the_largest() -> None:
    assert batch_buckets(1) == [1]
    assert batch_buckets(8) == [1, 2, 4, 8]
    assert batch_buckets(12) == [1, 2, 4, 8, 12]


@pytest.mark.parametrize(("count", "bucket"), [(1, 1), (3, 4), (5, 8), (9, 12), (12, 12)])
def test_a_batch_goes_into_the_smallest_bucket_that_holds_it(count: int, bucket: int) -> None:
    assert bucket_for(count, batch_buckets(12)) == bucket


TRT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_tensorrt_gets_an_engine_cache_and_one_profile_for_every_batch_size(
    tmp_path: Path,
) -> None:
    (name, options), *rest = provider_options(TRT, tmp_path, "pixels", (384, 640, 3), 16)
    assert name == "TensorrtExecutionProvider"
    assert rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_profile_min_shapes"] == "pixels:1x384x640x3"
    assert options["trt_profile_max_shapes"] == "pixels:16x384x640x3"


def test_tensorrt_profile_follows_a_float_nchw_input_and_a_fixed_batch_gets_none() -> None:
    (_, nchw), *_ = provider_options(TRT, None, "images", (3, 384, 640), 8)
    assert nchw["trt_profile_opt_shapes"] == "images:8x3x384x640"
    assert "trt_engine_cache_path" not in nchw
    (_, fixed), *_ = provider_options(TRT, None, "images", (3, 384, 640), None)
    assert not any(key.startswith("trt_profile") for key in fixed)


def test_device_preprocessing_and_padding_give_each_frame_the_boxes_opencv_blobs_give() -> None:
    images = boxed_photos()
    reference = Detector(load_manifest("centerface"), CPU).detect(images)
    device = Detector(load_manifest("centerface"), CPU, run_batch=4, device_preprocess=True,
                      io_binding=True)
    device.buckets = batch_buckets(4)  # pad as an accelerator does: 3 frames run as 4
    runs: list[int] = []
    real_batch = device._batch

    def counted(chunk: list[np.ndarray]) -> np.ndarray:
        batch = real_batch(chunk)
        runs.append(len(batch))
        return batch

    device._batch = counted  # type: ignore[method-assign]
    found = device.detect(images)
    assert runs == [4]
    assert [len(boxes) for boxes in found] == [1, 0, 1]
    for got, want in zip(found, reference, strict=True):
        np.testing.assert_allclose(got, want, atol=0.05)


def test_the_cpu_provider_keeps_opencv_blobs_and_no_padding_by_default() -> None:
    detector = Detector(load_manifest("centerface"), CPU, max_batch=8)
    assert (detector.device_preprocess, detector.io_binding) == (False, False)
    assert (detector.run_batch, detector.buckets) == (1, [])


def test_inference_decodes_on_threads_and_keeps_each_outcome_in_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEWIRE_HOME", str(tmp_path))
    settings = load_settings()
    settings.inference.decode_threads = 3
    files = {}
    for n, rgb in enumerate([samples.astronaut(), samples.coffee()]):
        path = tmp_path / f"cam{n}.jpg"
        cv2.imwrite(str(path), rgb[..., ::-1])
        files[f"cam-{n}"] = [path]
    good = prepared_frames(files, settings, per_camera=1)
    corrupt = replace(good[0], pixels=b"not a jpeg")
    stage = InferenceStage(settings)
    try:
        assert stage._decoders is not None
        outcomes = stage.process([good[0], corrupt, good[1], good[0]])
    finally:
        stage.close()
    assert isinstance(outcomes[1], DataError)
    faces = [len(o.detections) for o in (outcomes[0], outcomes[2], outcomes[3])]  # type: ignore[union-attr]
    assert faces == [1, 0, 1]
    assert [o.frame_id for o in (outcomes[0], outcomes[2])] == [good[0].frame_id,  # type: ignore[union-attr]
                                                                good[1].frame_id]


def test_a_gpu_request_preloads_cuda_and_a_failed_preload_only_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def failing_preload() -> None:
        calls.append("preload")
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(models.ort, "preload_dlls", failing_preload, raising=False)
    # this onnxruntime has no CUDA provider: ONNX Runtime warns and runs on the CPU
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        detector = Detector(load_manifest("centerface"), ["CUDAExecutionProvider", *CPU])
    assert calls == ["preload"]
    assert "could not preload CUDA libraries" in caplog.text
    # fell back to the CPU, so the model was loaded again for OpenCV's (faster) blobs
    assert detector.provider == "CPUExecutionProvider" and not detector.device_preprocess
    assert [len(boxes) for boxes in detector.detect(boxed_photos())] == [1, 0, 1]
