"""Image format and size from the header bytes alone, before any pixel is decoded."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from framewire.errors import DataError

ACCEPTED_FORMATS = "JPEG, PNG, BMP, GIF or WebP"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7 and a stray SOI.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})


@dataclass(frozen=True)
class ImageInfo:
    """What an encoded image claims to be: format, MIME type and pixel size."""

    format: str
    content_type: str
    width: int
    height: int


def sniff_image(data: bytes) -> ImageInfo:
    """Read the format and size from the header of ``data`` without decoding pixels."""
    if not data:
        raise DataError(
            "empty",
            "The image has zero bytes; the source sent nothing. Check the camera or uploader "
            "and send a non-empty image.",
        )
    if data.startswith(b"\xff\xd8\xff"):
        return _sniff_jpeg(data)
    if data.startswith(_PNG_SIGNATURE):
        return _sniff_png(data)
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _sniff_gif(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _sniff_webp(data)
    if data.startswith(b"BM"):
        return _sniff_bmp(data)
    raise DataError(
        "not_an_image",
        f"The data (first bytes {data[:8].hex(' ')}) is not a {ACCEPTED_FORMATS} image; "
        f"send one of those formats.",
    )


def _corrupt(fmt: str, what: str, data: bytes) -> DataError:
    return DataError(
        "corrupt_image",
        f"The {fmt} header is damaged: {what} ({len(data)} bytes in all). The file is "
        f"truncated or corrupt; re-capture or re-upload it.",
    )


def _unpack(fmt: str, layout: str, data: bytes, offset: int, what: str) -> tuple[Any, ...]:
    """Header fields at ``offset``, or corrupt_image when the data ends inside them."""
    if len(data) < offset + struct.calcsize(layout):
        raise _corrupt(fmt, f"it ends inside the {what}", data)
    return struct.unpack_from(layout, data, offset)


def _checked(fmt: str, width: int, height: int, data: bytes) -> ImageInfo:
    if width <= 0 or height <= 0:
        raise _corrupt(fmt, f"it claims a size of {width}x{height} pixels", data)
    return ImageInfo(fmt.lower(), f"image/{fmt.lower()}", width, height)


def _sniff_jpeg(data: bytes) -> ImageInfo:
    pos = 2
    while True:
        # libjpeg skips garbage between segments up to the next 0xFF; do the same.
        pos = data.find(b"\xff", pos)
        # Any number of 0xFF fill bytes may precede a marker.
        while 0 <= pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if not 0 <= pos < len(data):
            raise _corrupt("JPEG", "it ends before the frame header (SOFn marker)", data)
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE_MARKERS or marker == 0x00:
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("JPEG", f"marker FF{marker:02X} comes before any SOFn", data)
        (length,) = _unpack("JPEG", ">H", data, pos, f"FF{marker:02X} segment length")
        if length < 2:
            raise _corrupt("JPEG", f"segment FF{marker:02X} has impossible length {length}", data)
        if marker in _JPEG_SOF_MARKERS:
            # SOFn payload: precision (1 byte), height (2), width (2), components (1).
            height, width = _unpack("JPEG", ">HH", data, pos + 3, "frame header (SOFn)")
            return _checked("JPEG", width, height, data)
        pos += length


def _sniff_png(data: bytes) -> ImageInfo:
    width, height = _unpack("PNG", ">II", data, 16, "IHDR chunk")
    if data[12:16] != b"IHDR":
        raise _corrupt("PNG", "the first chunk is not IHDR", data)
    return _checked("PNG", width, height, data)


def _sniff_gif(data: bytes) -> ImageInfo:
    width, height = _unpack("GIF", "<HH", data, 6, "logical screen descriptor")
    return _checked("GIF", width, height, data)


def _sniff_bmp(data: bytes) -> ImageInfo:
    (dib_size,) = _unpack("BMP", "<I", data, 14, "DIB header")
    if dib_size == 12:
        # OS/2 BITMAPCOREHEADER: 16-bit unsigned width and height.
        width, height = _unpack("BMP", "<HH", data, 18, "DIB header")
    elif dib_size >= 16:
        width, height = _unpack("BMP", "<ii", data, 18, "DIB header")
        # A negative height marks a top-down bitmap, not a negative size.
        height = abs(height)
    else:
        raise _corrupt("BMP", f"DIB header size {dib_size} is not a known BMP header", data)
    return _checked("BMP", width, height, data)


def _sniff_webp(data: bytes) -> ImageInfo:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # Lossy: 3-byte frame tag, start code 9D 01 2A, then 14-bit width and height.
        start, width, height = _unpack("WebP", "<3sHH", data, 23, "VP8 key frame header")
        if start != b"\x9d\x01\x2a":
            raise _corrupt("WebP", "the VP8 key frame start code is missing", data)
        return _checked("WebP", width & 0x3FFF, height & 0x3FFF, data)
    if chunk == b"VP8L":
        # Lossless: signature 0x2F, then width-1 and height-1 packed in 14 bits each.
        signature, bits = _unpack("WebP", "<BI", data, 20, "VP8L header")
        if signature != 0x2F:
            raise _corrupt("WebP", "the VP8L signature byte is missing", data)
        return _checked("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, data)
    if chunk == b"VP8X":
        # Extended: flags and reserved (4 bytes), then canvas width-1 and height-1 in 24 bits.
        width, height = _unpack("WebP", "<3s3s", data, 24, "VP8X header")
        return _checked(
            "WebP", int.from_bytes(width, "little") + 1, int.from_bytes(height, "little") + 1, data
        )
    raise _corrupt("WebP", f"the first chunk {chunk!r} is not VP8, VP8L or VP8X", data)
