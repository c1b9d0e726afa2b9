"""What an accelerator needs around a model: pixels normalised on the device, fixed batch
shapes, provider options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from framewire.errors import ConfigError

CPU_PROVIDER = "CPUExecutionProvider"
DEVICE_INPUT = "framewire_pixels"


@dataclass(frozen=True)
class PixelInput:
    """How the model normalises uint8 BGR pixels: x * scale + bias per channel, in the
    model's colour order after an optional blue/red swap."""

    scale: tuple[float, float, float]
    bias: tuple[float, float, float]
    swap_rb: bool


def add_pixel_input(model: onnx.ModelProto, pixels: PixelInput) -> onnx.ModelProto:
    """Make the model take uint8 BGR pixels (N, H, W, 3) and normalise them itself.

    The float NCHW input becomes the output of Cast → (channel swap) → x * scale + bias →
    Transpose, run by the execution provider. A GPU then receives a quarter of the bytes and
    the host no longer builds float blobs.
    """
    graph = model.graph
    if len(graph.input) != 1:
        raise ConfigError(
            f"the model has {len(graph.input)} inputs ({', '.join(i.name for i in graph.input)}); "
            "device preprocessing needs one image input: set "
            "FRAMEWIRE_INFERENCE__DEVICE_PREPROCESS=false")
    (original,) = graph.input
    dims = original.type.tensor_type.shape.dim
    # a dim with neither a name nor a value is unknown: keep it unknown, not fixed at 0
    batch, height, width = (d.dim_param or d.dim_value or None for d in (dims[0], dims[2], dims[3]))
    swap_rb, scale, bias = pixels.swap_rb, pixels.scale, pixels.bias
    pixels = helper.make_tensor_value_info(DEVICE_INPUT, TensorProto.UINT8,
                                           [batch, height, width, 3])
    names = [f"{DEVICE_INPUT}_{step}" for step in ("float", "ordered", "scaled", "normalised")]
    nodes = [helper.make_node("Cast", [DEVICE_INPUT], [names[0]], to=TensorProto.FLOAT)]
    if swap_rb:
        nodes.append(helper.make_node("Gather", [names[0], f"{DEVICE_INPUT}_rgb"], [names[1]],
                                      axis=3))
        graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64),
                                                         f"{DEVICE_INPUT}_rgb"))
    else:
        names[1] = names[0]
    graph.initializer.extend([
        numpy_helper.from_array(np.array(scale, np.float32), f"{DEVICE_INPUT}_scale"),
        numpy_helper.from_array(np.array(bias, np.float32), f"{DEVICE_INPUT}_bias"),
    ])
    nodes += [
        helper.make_node("Mul", [names[1], f"{DEVICE_INPUT}_scale"], [names[2]]),
        helper.make_node("Add", [names[2], f"{DEVICE_INPUT}_bias"], [names[3]]),
        helper.make_node("Transpose", [names[3]], [original.name], perm=[0, 3, 1, 2]),
    ]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    del graph.input[:]
    graph.input.append(pixels)
    return model


def batch_buckets(largest: int) -> list[int]:
    """Run sizes an accelerator sees: powers of two below ``largest``, then ``largest``.

    Each new input shape costs the provider a kernel search (cuDNN) or an engine build
    (TensorRT); padding a batch up to its bucket bounds how many shapes there are.
    """
    sizes, size = [], 1
    while size < largest:
        sizes.append(size)
        size *= 2
    return [*sizes, largest]


def bucket_for(count: int, buckets: list[int]) -> int:
    """The smallest bucket that holds ``count`` frames (the largest when none does)."""
    return next((size for size in buckets if size >= count), buckets[-1])


def provider_options(providers: list[str], cache_dir: Path | None, input_name: str,
                     frame_shape: tuple[int, int, int], max_batch: int | None) -> list[Any]:
    """Providers as ONNX Runtime takes them, with options for TensorRT: its engine cache and,
    for a model whose batch varies, one shape profile that covers 1..max_batch frames."""
    chosen: list[Any] = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            options: dict[str, Any] = {"trt_fp16_enable": True}
            if max_batch is not None:
                shape = f"{input_name}:{{n}}x" + "x".join(str(d) for d in frame_shape)
                options |= {
                    "trt_profile_min_shapes": shape.format(n=1),
                    "trt_profile_opt_shapes": shape.format(n=max_batch),
                    "trt_profile_max_shapes": shape.format(n=max_batch),
                }
            if cache_dir is not None:
                options |= {"trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache_dir)}
            chosen.append((name, options))
        else:
            chosen.append(name)
    return chosen
