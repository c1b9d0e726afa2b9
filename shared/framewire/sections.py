"""The sections of the settings (``framewire.config.Settings``): each stage's tuning, ingest,
the gateway, and a camera; and ``duration_ms``, how durations are written in them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from framewire.contracts import CAMERA_ID_PATTERN
from framewire.secrets import mask_url

_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(value: str | int) -> int:
    """``"24h"``, ``"30d"``, ``"90s"``, ``"500ms"`` or a number of milliseconds; -1 = forever."""
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    for unit in ("ms", "s", "m", "h", "d"):
        number = text.removesuffix(unit)
        if number != text and number.strip().isdigit():
            return int(number) * _DURATION_UNITS_MS[unit]
    if text.lstrip("-").isdigit():
        return int(text)
    raise ValueError(f"{value!r} is not a duration: write e.g. 500ms, 90s, 15m, 24h, 30d or -1")



class StageSettings(BaseModel):
    """The knobs every stage the runtime's loop runs has: micro-batching, fetching, replicas.

    A stage's declaration names its settings model (this one, or a subclass with its own
    knobs and defaults)."""

    replicas: int = Field(1, ge=1, le=64, description="processes of this stage `framewire run` "
                          "starts (--replicas overrides); each is a member of the stage's group")
    batch_size: int = Field(16, ge=1, le=10_000, description="most records per micro-batch")
    batch_linger_ms: int = Field(0, ge=0, le=60_000, description="after the first record, how "
                                 "long to wait for more; 0 = take what is already fetched")
    fetch_wait_ms: int | None = Field(
        None, ge=1, le=60_000, description="this stage's consumer fetch.wait.max.ms; unset = "
        "the site's (on the embedded broker, which answers a waiting fetch only when the wait "
        "ends: 25 for inference, 20 for storage, 50 otherwise; shorter waits cut latency and "
        "cost broker CPU)")
    embedded_fetch_wait_ms: int = Field(
        50, ge=1, le=60_000, description="fetch.wait.max.ms on the embedded broker when "
        "fetch_wait_ms is unset")


class PreprocessSettings(StageSettings):
    pixel_format: Literal["jpeg", "bgr8"] = "jpeg"
    jpeg_quality: int = Field(90, ge=10, le=100)
    dark_threshold: float = Field(40.0, ge=0, le=255)
    blur_threshold: float = Field(60.0, ge=0)


class InferenceSettings(StageSettings):
    batch_size: int = Field(8, ge=1, le=256)
    # at 65 % load on 2 cores: p99 124 -> 100 ms, full speed -2 % (docs/benchmarks.md)
    embedded_fetch_wait_ms: int = Field(25, ge=1, le=60_000)
    model: str = "centerface"
    providers: str = "auto"
    intra_op_threads: int = Field(1, ge=0, le=256)
    model_batch: int = Field(0, ge=0, le=256, description="frames per model run; 0 = auto: "
                             "1 on the CPU provider, the whole micro-batch on a GPU")
    device_preprocess: bool | None = Field(
        None, description="normalise uint8 pixels inside the model on the execution provider; "
        "None = auto: on for GPU providers (a quarter of the bytes to copy), off on the CPU")
    decode_threads: int = Field(0, ge=0, le=64, description="threads decoding a micro-batch's "
                                "JPEGs; 0 = auto: 1 on the CPU provider, up to 4 on a GPU")
    store_frames: Literal["all", "detections", "none"] = Field(
        "detections", description="which frames are kept in the blob store (a JPEG as the model "
        "saw it, and a thumbnail), named by the result's frame_uri and thumbnail_uri: every "
        "frame, those with a detection, or none; under privacy mode every face found in them is "
        "blurred first")


class StorageSettings(StageSettings):
    # one database transaction per batch; a backlog fills batches without any linger (a 5 ms
    # linger added 5 ms to each frame at moderate rates and saved no CPU: docs/benchmarks.md)
    batch_size: int = Field(64, ge=1, le=10_000)
    embedded_fetch_wait_ms: int = Field(20, ge=1, le=60_000)


class IngestSettings(BaseModel):
    """Per-camera pacing and what to do when the pipeline falls behind."""

    max_fps: float | None = Field(None, gt=0, le=240, description="cap per camera; None = no cap")
    backpressure: Literal["drop_oldest", "drop_newest", "block"] = "drop_oldest"
    buffer_frames: int = Field(32, ge=1, le=100_000, description="frames held per camera")
    max_lag_frames: int = Field(2000, ge=1, description="frames waiting in the pipeline (lags "
                                "of preprocess, inference and storage) that count as behind")
    max_in_flight: int = Field(500, ge=1, description="unacknowledged frames that count as behind")


class GatewaySettings(BaseModel):
    """The gateway: Framewire's HTTP API (``/api/v1``), one process under ``framewire run``."""

    host: str = Field("127.0.0.1", description="address the gateway listens on; loopback unless "
                      "set (e.g. 0.0.0.0 to serve other hosts: every request needs a token)")
    port: int = Field(8080, ge=0, le=65535, description="its port; 0 = a free port, written to "
                      "FRAMEWIRE_HOME/gateway.url")
    stream_settle_ms: int = Field(
        1000, ge=0, le=60_000, description="the live stream sends a result once it has been "
        "stored this long: a slower storage transaction begun earlier has committed by then, so "
        "a stream resumed from an event id misses nothing")
    webhook_attempts: int = Field(
        8, ge=1, le=30, description="tries of one result's delivery to a webhook before it is "
        "given up (counted in the gateway's drop_reasons as webhook_given_up)")
    webhook_backoff_ms: int = Field(
        500, ge=10, le=60_000, description="wait before a webhook's first retry; doubled at "
        "each retry, at most 30 s")
    webhook_timeout_s: float = Field(10.0, gt=0, le=120, description="how long one webhook "
                                     "POST may take before it counts as failed")


class CameraSettings(BaseModel):
    """A camera ingest reads by itself (``framewire publish`` covers one-off sources)."""

    camera_id: str = Field(pattern=CAMERA_ID_PATTERN.pattern)
    url: str = Field(description="file, folder or camera URL; shown masked (mask_url)")
    fps: float | None = Field(None, gt=0, le=240)
    loop: bool = False
    retention: str | None = Field(
        None, description="how long this camera's results, detections, spans and blobs are "
        "kept (e.g. 7d, 12h); unset = data_retention")
    privacy_mode: bool | None = Field(
        None, description="this camera's privacy mode; unset = the site's privacy_mode")

    @field_validator("retention")
    @classmethod
    def _retention_is_a_duration(cls, value: str | None) -> str | None:
        if value is not None and duration_ms(value) <= 0:
            raise ValueError(f"{value!r}: give a positive duration such as 7d or 12h")
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # a camera URL may carry a password or a token: the repr of settings shows it masked
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "url" else value
