"""Detection models: execution providers, ONNX Runtime sessions."""

from __future__ import annotations

import importlib.resources
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx.tools.update_model_dims import update_inputs_outputs_dims

from framewire.errors import ConfigError
from framewire.models.manifest import ModelManifest, model_file
from framewire.services.inference.accel import (
    CPU_PROVIDER,
    PixelInput,
    add_pixel_input,
    batch_buckets,
    bucket_for,
    provider_options,
)
from framewire.services.inference.decoders import decode_centerface, decode_yolov8

logger = logging.getLogger(__name__)

_PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_AUTO_PROVIDERS = tuple(_PROVIDER_ALIASES.values())


def choose_providers(preference: str) -> list[str]:
    """ONNX Runtime providers for "auto" (TensorRT, CUDA, CPU) or a list like "cuda,cpu"."""
    available = ort.get_available_providers()
    if preference.strip().lower() == "auto":
        return [name for name in _AUTO_PROVIDERS if name in available]
    by_lower = {name.lower(): name for name in available}
    chosen = []
    for item in (part.strip() for part in preference.split(",")):
        if not item:
            continue
        name = _PROVIDER_ALIASES.get(item.lower()) or by_lower.get(item.lower(), item)
        if name not in available:
            raise ConfigError(
                f"Execution provider {item!r} ({name}) is not available in this onnxruntime "
                f"build; available: {', '.join(available)}. Set FRAMEWIRE_INFERENCE__PROVIDERS to "
                f"'auto' or to those, or install the GPU build: pip install framewire[gpu]."
            )
        chosen.append(name)
    if not chosen:
        raise ConfigError(
            f"Execution provider preference {preference!r} names no provider; use 'auto' or a "
            f"comma list such as 'cuda,cpu'."
        )
    return chosen


def prepare_model(path: Path, dynamic_input: bool,
                  pixel_input: PixelInput | None = None) -> onnx.ModelProto:
    """Load an ONNX file, unlist weights from the graph inputs, optionally free its dims and
    give it a uint8 pixel input."""
    model = onnx.load(path)
    initializers = {init.name for init in model.graph.initializer}
    # Older exports (CenterFace among them) list every weight as an overridable graph input,
    # which stops ONNX Runtime folding BatchNorm into Conv: unlisting them measured 2.4x faster.
    inputs = [node for node in model.graph.input if node.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    if dynamic_input:
        input_dims = {
            node.name: ["B", node.type.tensor_type.shape.dim[1].dim_value, "H", "W"]
            for node in model.graph.input
        }
        output_dims = {}
        for node in model.graph.output:
            dims = node.type.tensor_type.shape.dim
            # Batch varies, channels (or classes) stay, every later dim follows the input size.
            output_dims[node.name] = [
                "B",
                dims[1].dim_value,
                *(f"d{i}" for i in range(2, len(dims))),
            ]
        model = update_inputs_outputs_dims(model, input_dims, output_dims)
    if pixel_input is not None:
        model = add_pixel_input(model, pixel_input)
    return model


def blob_params(manifest: ModelManifest) -> cv2.dnn.Image2BlobParams:
    """OpenCV's float NCHW blob settings for a model's input normalisation."""
    # OpenCV computes (pixel - mean') * factor, so (pixel * scale - mean) / std becomes
    # mean' = mean / scale and factor = scale / std, in the model's channel order.
    return cv2.dnn.Image2BlobParams(
        scalefactor=tuple(manifest.scale / s for s in manifest.std),
        size=(manifest.input_width, manifest.input_height),
        mean=tuple(m / manifest.scale for m in manifest.mean),
        swapRB=manifest.colour_order == "RGB",
        ddepth=cv2.CV_32F,
    )


def pixel_input(manifest: ModelManifest) -> PixelInput:
    """The same normalisation as ``blob_params``, done by the model on uint8 pixels."""
    (s0, s1, s2), (m0, m1, m2) = manifest.std, manifest.mean
    # (pixel * scale - mean) / std == pixel * (scale / std) - mean / std, per channel in the
    # model's colour order
    return PixelInput(scale=(manifest.scale / s0, manifest.scale / s1, manifest.scale / s2),
                      bias=(-m0 / s0, -m1 / s1, -m2 / s2),
                      swap_rb=manifest.colour_order == "RGB")


def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* pip packages (onnxruntime-gpu[cuda,cudnn]), so a
    GPU provider works without LD_LIBRARY_PATH; libraries found on the path are used as well."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu 1.21 and later
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # the provider reports what is still missing when it loads
        logger.warning("could not preload CUDA libraries: %s", exc)


class Detector:
    """One ONNX Runtime session that turns batches of letterboxed BGR frames into boxes.

    On the CPU provider frames go one per run as float blobs built by OpenCV. On an
    accelerator (CUDA, TensorRT) the whole micro-batch goes in one run, as uint8 pixels that
    the device normalises (``device_preprocess``), padded to a few fixed batch sizes that are
    warmed up at start.
    """

    def __init__(
        self, manifest: ModelManifest, providers: list[str], intra_op_threads: int = 1,
        run_batch: int = 0, *, max_batch: int = 0, device_preprocess: bool | None = None,
        io_binding: bool = False, cache_dir: Path | None = None,
    ) -> None:
        self.manifest = manifest
        accelerated = providers[0] != CPU_PROVIDER
        if accelerated:
            _preload_cuda_libraries()
        # IO binding (inputs bound from host memory, outputs to host) measured slower than
        # run() on an H200 (977-1,020 against 1,220-1,274 frames/s at 32 frames,
        # docs/benchmarks.md); it stays an option for other cards and models.
        self.io_binding = io_binding
        self._options = ort.SessionOptions()
        # ORT logs to stderr, not through `logging`; keep its chatter (e.g. about unused
        # initializers) out, while real failures still arrive as exceptions.
        self._options.log_severity_level = 3
        self._options.intra_op_num_threads = intra_op_threads
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._blob_params = blob_params(manifest)
        largest = max(run_batch, max_batch, 1)
        wanted = accelerated if device_preprocess is None else device_preprocess
        self._open(providers, wanted, largest, cache_dir)
        if device_preprocess is None and wanted and self.provider == CPU_PROVIDER:
            # No accelerator after all (ONNX Runtime fell back): OpenCV's blobs are faster here.
            self._open([CPU_PROVIDER], False, largest, cache_dir)
        shape = list(self._session.get_inputs()[0].shape)
        if self.device_preprocess:  # (N, H, W, 3) → (N, 3, H, W) for the checks
            shape = [shape[0], 3, shape[1], shape[2]]
        fixed_batch = self._check_shapes(shape, self._session.get_outputs())
        # Frames per session run. On the CPU provider one at a time is cheapest per frame
        # (CenterFace 640x384, 1 thread: 32.5 ms at 1, 34.8 at 2, 38.7 at 4, 40.9 at 8);
        # accelerators gain from the whole micro-batch. A model with a fixed batch gets that.
        self.run_batch: int | None
        if fixed_batch is not None:
            self.run_batch = fixed_batch
        elif run_batch:
            self.run_batch = run_batch
        elif self.provider == CPU_PROVIDER:
            self.run_batch = 1
        else:
            self.run_batch = max_batch or None
        # Only accelerators pad: a new shape costs them a kernel search or an engine build.
        self.buckets = (batch_buckets(self.run_batch)
                        if self.run_batch and self.provider != CPU_PROVIDER else [])
        if fixed_batch is not None:
            self.buckets = [fixed_batch]
        warm_s = self._warm_up() if self.provider != CPU_PROVIDER else 0.0
        logger.info(
            "model %s %s loaded on %s (device preprocessing %s, batch sizes %s, warm-up %.1f s)",
            manifest.name,
            manifest.version,
            self.provider,
            "on" if self.device_preprocess else "off",
            self.buckets or [self.run_batch or "whole micro-batch"],
            warm_s,
            extra={
                "model": manifest.name,
                "model_version": manifest.version,
                "provider": self.provider,
            },
        )

    def _open(self, providers: list[str], device_preprocess: bool, largest: int,
              cache_dir: Path | None) -> None:
        """Load the model (with the uint8 pixel input or not) into a session."""
        m = self.manifest
        pixels = pixel_input(m) if device_preprocess else None
        with importlib.resources.as_file(model_file(m)) as path:
            model = prepare_model(path, m.dynamic_input, pixels)
        model_input = model.graph.input[0]
        frame_shape = ((m.input_height, m.input_width, 3) if device_preprocess
                       else (3, m.input_height, m.input_width))
        dynamic_batch = not model_input.type.tensor_type.shape.dim[0].dim_value
        session_providers = provider_options(providers, cache_dir, model_input.name, frame_shape,
                                             largest if dynamic_batch else None)
        self._session = ort.InferenceSession(model.SerializeToString(),
                                             sess_options=self._options,
                                             providers=session_providers)
        self.device_preprocess = device_preprocess
        self._input_name = model_input.name
        self.provider: str = self._session.get_providers()[0]
        self._output_names = [out.name for out in self._session.get_outputs()]

    def _check_shapes(self, input_shape: list[Any], outputs: list[Any]) -> int | None:
        """Fail on fixed dims the manifest contradicts; return a fixed batch size if any."""
        m = self.manifest
        if len(input_shape) != 4:
            raise ConfigError(
                f"Model {m.name} takes input of shape {input_shape}, not an image batch "
                f"(N, 3, H, W); export it with an NCHW image input."
            )
        fixed_h, fixed_w = input_shape[2], input_shape[3]
        if (isinstance(fixed_h, int) and fixed_h != m.input_height) or (
            isinstance(fixed_w, int) and fixed_w != m.input_width
        ):
            raise ConfigError(
                f"Model {m.name} has a fixed input of {fixed_w}x{fixed_h} but the manifest says "
                f"input_width={m.input_width}, input_height={m.input_height}; make them match "
                f"or set dynamic_input: true."
            )
        rows = outputs[0].shape[1]
        if m.decoder == "yolov8" and isinstance(rows, int) and rows != 4 + len(m.class_names):
            raise ConfigError(
                f"Model {m.name} outputs {rows - 4} class scores but class_names lists "
                f"{len(m.class_names)}; list one name per class in the manifest."
            )
        return input_shape[0] if isinstance(input_shape[0], int) else None

    def _warm_up(self) -> float:
        """Run each batch size once, so kernel searches happen now and not on live frames."""
        started = time.monotonic()
        m = self.manifest
        blank = np.zeros((m.input_height, m.input_width, 3), np.uint8)
        for size in self.buckets:
            self._run(self._batch([blank] * size))
        return time.monotonic() - started

    def _batch(self, images: list[np.ndarray]) -> np.ndarray:
        """The model input for these images, padded with blank frames up to their bucket."""
        size = bucket_for(len(images), self.buckets) if self.buckets else len(images)
        if self.device_preprocess:
            batch = np.zeros((size, *images[0].shape), np.uint8)
            for slot, image in zip(batch, images, strict=False):
                slot[...] = image
            return batch
        blob = cv2.dnn.blobFromImagesWithParams(images, self._blob_params)
        if size > len(images):
            blob = np.concatenate([blob, np.zeros((size - len(images), *blob.shape[1:]),
                                                  blob.dtype)])
        return blob

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self.io_binding:
            return self._session.run(None, {self._input_name: batch})
        # The provider writes outputs straight into host buffers it allocates, and the input
        # is copied to the device once, without the extra staging of run().
        binding = self._session.io_binding()
        binding.bind_cpu_input(self._input_name, batch)
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Detect in letterboxed BGR uint8 images: one (N,6) [x1,y1,x2,y2,score,class] each."""
        m = self.manifest
        expected = (m.input_height, m.input_width, 3)
        for img in images:
            if img.shape != expected or img.dtype != np.uint8:
                raise ValueError(
                    f"detect() takes letterboxed uint8 images of shape {expected}, "
                    f"got {img.dtype} {img.shape}; letterbox() them first"
                )
        if not images:
            return []
        step = self.run_batch or len(images)
        results: list[np.ndarray] = []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            outputs = [out[: len(chunk)] for out in self._run(self._batch(chunk))]
            if m.decoder == "centerface":
                heatmap, box_scale, offset, landmarks = outputs[:4]
                results += decode_centerface(
                    heatmap,
                    box_scale,
                    offset,
                    landmarks,
                    m.input_width,
                    m.input_height,
                    m.score_threshold,
                    m.nms_iou,
                )
            else:
                results += decode_yolov8(outputs[0], m.score_threshold, m.nms_iou)
        return results
