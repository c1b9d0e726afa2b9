"""sniff_image: format and size from header bytes, distinct errors for each kind of bad input."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from framewire.errors import DataError
from framewire.pixels.imageinfo import ImageInfo, sniff_image

WIDTH, HEIGHT = 257, 123


def encode(ext: str, params: list[int] | None = None, channels: int = 3) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, channels), np.uint8)
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("ext", "params", "fmt", "content_type"),
    [
        (".jpg", [], "jpeg", "image/jpeg"),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "jpeg", "image/jpeg"),
        (".png", [], "png", "image/png"),
        (".bmp", [], "bmp", "image/bmp"),
        (".gif", [], "gif", "image/gif"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], "webp", "image/webp"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], "webp", "image/webp"),
    ],
    ids=["jpeg-baseline", "jpeg-progressive", "png", "bmp", "gif", "webp-lossy", "webp-lossless"],
)
def test_format_and_size_are_read_from_the_header(
    ext: str, params: list[int], fmt: str, content_type: str
) -> None:
    assert sniff_image(encode(ext, params)) == ImageInfo(fmt, content_type, WIDTH, HEIGHT)


def test_webp_samples_cover_both_the_vp8_and_vp8l_chunks() -> None:
    chunks = {encode(".webp", [cv2.IMWRITE_WEBP_QUALITY, q])[12:16] for q in (80, 101)}
    assert chunks == {b"VP8 ", b"VP8L"}


def test_extended_webp_size_is_read_from_the_vp8x_canvas() -> None:
    header = b"RIFF" + struct.pack("<I", 22) + b"WEBP" + b"VP8X" + struct.pack("<I", 10)
    header += (
        b"\x10\x00\x00\x00" + (4000 - 1).to_bytes(3, "little") + (3000 - 1).to_bytes(3, "little")
    )
    assert sniff_image(header) == ImageInfo("webp", "image/webp", 4000, 3000)


def test_jpeg_walk_skips_exif_app1_and_fill_bytes() -> None:
    data = encode(".jpg")
    # An EXIF payload holding bytes that look like a SOF0 claiming 16x16: a scanner that
    # searches instead of walking segment lengths would report that size.
    payload = b"Exif\x00\x00" + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10" + bytes(300)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    crafted = data[:2] + app1 + b"\xff\xff\xff" + data[2:]
    assert sniff_image(crafted) == ImageInfo("jpeg", "image/jpeg", WIDTH, HEIGHT)


def test_only_the_header_bytes_are_needed() -> None:
    data = encode(".png")
    # Signature (8) + IHDR length and type (8) + width and height (8); no pixel data at all.
    assert sniff_image(data[:24]) == ImageInfo("png", "image/png", WIDTH, HEIGHT)


def test_top_down_bmp_reports_a_positive_height() -> None:
    data = bytearray(encode(".bmp"))
    data[22:26] = struct.pack("<i", -HEIGHT)
    assert sniff_image(bytes(data)).height == HEIGHT


def test_zero_bytes_is_empty() -> None:
    with pytest.raises(DataError) as err:
        sniff_image(b"")
    assert err.value.code == "empty"


def test_text_file_is_not_an_image_and_the_reason_names_accepted_formats() -> None:
    with pytest.raises(DataError) as err:
        sniff_image(b"camera 7 notes: lens cleaned on Tuesday\n")
    assert err.value.code == "not_an_image"
    assert "JPEG, PNG, BMP, GIF or WebP" in err.value.reason


@pytest.mark.parametrize(
    ("ext", "keep"),
    [(".jpg", 20), (".png", 20), (".bmp", 20), (".gif", 8), (".webp", 20)],
)
def test_known_magic_with_a_truncated_header_is_corrupt(ext: str, keep: int) -> None:
    with pytest.raises(DataError) as err:
        sniff_image(encode(ext)[:keep])
    assert err.value.code == "corrupt_image"


def test_jpeg_reaching_image_data_before_any_frame_header_is_corrupt() -> None:
    data = b"\xff\xd8" + b"\xff\xda\x00\x08" + bytes(6) + b"\xff\xd9"
    with pytest.raises(DataError) as err:
        sniff_image(data)
    assert err.value.code == "corrupt_image"


def test_png_claiming_zero_width_is_corrupt() -> None:
    data = bytearray(encode(".png"))
    data[16:20] = bytes(4)
    with pytest.raises(DataError) as err:
        sniff_image(bytes(data))
    assert err.value.code == "corrupt_image"
    assert "0x123" in err.value.reason
