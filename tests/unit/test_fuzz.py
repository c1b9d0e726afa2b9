"""Fuzzing the parsers that read untrusted bytes: they return a value or raise DataError, only.

Anything else (IndexError, struct.error, cv2.error...) would reach the runtime as a stage bug
instead of a dead letter with a reason. Inputs are arbitrary bytes and mutated valid ones
(bytes flipped, the end cut off, junk appended); flips favour the first bytes, where headers are.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import datetime
from importlib import resources

import cv2
import fastavro
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from framewire.contracts import FrameCaptured, FrameHeader, utcnow
from framewire.contracts.codec import MAGIC, Codec, schema_fingerprint
from framewire.errors import DataError
from framewire.pixels.encoding import decode_image
from framewire.pixels.imageinfo import ImageInfo, sniff_image
from tests.data.bad.generate import image_cases
from tests.fixtures.images import jpeg, synthetic_frame

MAX_PIXELS = 4_000_000
# no example database (it would litter the checkout): keep a failure found here as an @example
FUZZ = settings(max_examples=200, deadline=None, database=None)
CODEC = Codec()
_HEADER_BYTES = 64


def _encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def _gif(img: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).save(out, "GIF")
    return out.getvalue()


def _valid_frames() -> list[bytes]:
    now = utcnow()
    header = FrameHeader(frame_id="01JFUZZ0000000000000000000", camera_id="cam-fuzz", seq=7,
                         captured_at=now, ingested_at=now)
    base = FrameCaptured(
        header=header,
        source="fuzz",
        content_type="image/jpeg",
        width=64,
        height=48,
        image=b"\xff\xd8\xff" + bytes(range(40)),
    )
    by_reference = replace(
        base,
        header=replace(header, camera_id="caméra-ü", seq=2**40, image_uri="file:///blobs/ab.bin"),
        image=None,
        image_sha256="ab" * 32,
    )
    return [CODEC.encode(base), CODEC.encode(by_reference), _v1_frame(base)]


def _v1_frame(frame: FrameCaptured) -> bytes:
    """``frame`` as a producer of FrameCaptured v1 wrote it: the header's fields at the top."""
    text = resources.files("framewire.schemas").joinpath("FrameCaptured.v1.avsc").read_text()
    parsed = fastavro.parse_schema(json.loads(text), named_schemas={})
    data = {**frame.to_avro(), **frame.header.to_avro(), "schema_version": 1}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, data)
    return MAGIC + schema_fingerprint(parsed).to_bytes(8, "little") + body.getvalue()


_SMALL = synthetic_frame(5, width=64, height=48)
VALID_FRAMES = _valid_frames()
VALID_IMAGES = {
    "jpeg": jpeg(_SMALL),
    "png": _encoded(".png", _SMALL),
    "bmp": _encoded(".bmp", _SMALL),
    "webp": _encoded(".webp", _SMALL),
    "gif": _gif(_SMALL),
    **{
        name: data
        for name, data in image_cases().items()
        if name in ("one_pixel", "png_16bit", "cmyk_jpeg", "exif_rotated")
    },
}


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds`` with 1-4 edits: a byte flipped, the end cut off, or junk appended."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(("flip", "truncate", "extend")))
        if edit == "flip" and data:
            anywhere = st.integers(0, len(data) - 1)
            in_header = st.integers(0, min(len(data), _HEADER_BYTES) - 1)
            data[draw(st.one_of(in_header, anywhere))] ^= draw(st.integers(1, 255))
        elif edit == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        else:
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


# a real FrameCaptured header in front of an arbitrary body reaches fastavro's reader
_REAL_HEADER = VALID_FRAMES[0][: len(MAGIC) + 8]
FRAME_BYTES = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=512).map(lambda body: _REAL_HEADER + body),
    mutated(VALID_FRAMES),
)
IMAGE_BYTES = st.one_of(st.binary(max_size=2048), mutated(list(VALID_IMAGES.values())))


def check_frame_decode(data: bytes) -> None:
    """Decoding gives a well-typed FrameCaptured or a DataError with a code and a reason."""
    try:
        frame = CODEC.decode(data, FrameCaptured)
    except DataError as exc:
        assert exc.code and exc.reason
        return
    assert isinstance(frame, FrameCaptured)
    assert isinstance(frame.camera_id, str) and isinstance(frame.captured_at, datetime)


def check_sniff(data: bytes) -> None:
    """Sniffing gives a positive size or a DataError."""
    try:
        info = sniff_image(data)
    except DataError as exc:
        assert exc.code and exc.reason
        return
    assert isinstance(info, ImageInfo) and info.width > 0 and info.height > 0


def check_decode(data: bytes) -> None:
    """Decoding gives BGR uint8 HxWx3 within the pixel limit, or a DataError."""
    try:
        img = decode_image(data, max_pixels=MAX_PIXELS)
    except DataError as exc:
        assert exc.code and exc.reason
        return
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0
    assert img.shape[0] * img.shape[1] <= MAX_PIXELS, img.shape


# The mutations only test anything if they start from inputs that parse.
@pytest.mark.parametrize("data", VALID_FRAMES, ids=["inline", "by_reference", "v1"])
def test_fuzz_seed_frames_decode(data: bytes):
    assert isinstance(CODEC.decode(data, FrameCaptured), FrameCaptured)


@pytest.mark.parametrize("name", list(VALID_IMAGES))
def test_fuzz_seed_images_decode(name: str):
    assert decode_image(VALID_IMAGES[name], MAX_PIXELS).shape[2] == 3


@FUZZ
@given(FRAME_BYTES)
@example(b"")
@example(MAGIC)
@example(_REAL_HEADER)
@example(_REAL_HEADER + b"\x02")
@example(VALID_FRAMES[0][:-1])
def test_frame_decode_returns_a_frame_or_raises_data_error(data: bytes):
    check_frame_decode(data)


# each format's signature alone, and with its size fields but nothing after them
HEADER_ONLY = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"RIFF\x00\x00\x00\x00WEBPVP8X" + bytes(12),
    b"BM",
    b"BM" + bytes(12) + b"\x0c\x00\x00\x00",
    VALID_IMAGES["png"][:24],
    VALID_IMAGES["gif"][:10],
]


@pytest.mark.parametrize("data", HEADER_ONLY)
def test_image_header_without_pixels_is_refused_with_data_error(data: bytes):
    check_sniff(data)
    with pytest.raises(DataError):
        decode_image(data, max_pixels=MAX_PIXELS)


@FUZZ
@given(IMAGE_BYTES)
def test_sniff_image_returns_a_size_or_raises_data_error(data: bytes):
    check_sniff(data)


@FUZZ
@given(IMAGE_BYTES)
def test_decode_image_returns_bgr8_within_the_pixel_limit_or_raises_data_error(data: bytes):
    check_decode(data)
