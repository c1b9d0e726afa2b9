"""Image format and size from the header bytes alone, before any pixel is decoded."""

from __future__ import annotations

import struct
from dataclasses import dataclass

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


def _corrupt(fmt: str, what: str, size: int) -> DataError:
    return DataError(
        "corrupt_image",
        f"The {fmt} header is damaged: {what} ({size} bytes in all). The file is truncated "
        f"or corrupt; re-capture or re-upload it.",
    )


def _checked(fmt: str, content_type: str, width: int, height: int, size: int) -> ImageInfo:
    if width <= 0 or height <= 0:
        raise _corrupt(fmt, f"it claims a size of {width}x{height} pixels", size)
    return ImageInfo(fmt, content_type, width, height)


def _sniff_jpeg(data: bytes) -> ImageInfo:
    size = len(data)
    pos = 2
    while True:
        # libjpeg skips garbage between segments up to the next 0xFF; do the same.
        pos = data.find(b"\xff", pos)
        if pos < 0:
            raise _corrupt("JPEG", "it ends before the frame header (SOFn marker)", size)
        # Any number of 0xFF fill bytes may precede a marker.
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            raise _corrupt("JPEG", "it ends before the frame header (SOFn marker)", size)
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE_MARKERS or marker == 0x00:
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt(
                "JPEG", f"image data (marker FF{marker:02X}) comes before any SOFn", size
            )
        if pos + 2 > size:
            raise _corrupt("JPEG", f"segment FF{marker:02X} at byte {pos - 2} is cut short", size)
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise _corrupt(
                "JPEG", f"segment FF{marker:02X} has an impossible length {length}", size
            )
        if marker in _JPEG_SOF_MARKERS:
            # SOFn payload: precision (1 byte), height (2), width (2), components (1).
            if pos + 7 > size:
                raise _corrupt("JPEG", "the frame header (SOFn) is cut short", size)
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return _checked("jpeg", "image/jpeg", width, height, size)
        pos += length


def _sniff_png(data: bytes) -> ImageInfo:
    size = len(data)
    if size < 24:
        raise _corrupt("PNG", "it ends before the IHDR chunk", size)
    if data[12:16] != b"IHDR":
        raise _corrupt("PNG", "the first chunk is not IHDR", size)
    width, height = struct.unpack_from(">II", data, 16)
    return _checked("png", "image/png", width, height, size)


def _sniff_gif(data: bytes) -> ImageInfo:
    size = len(data)
    if size < 10:
        raise _corrupt("GIF", "it ends before the logical screen descriptor", size)
    width, height = struct.unpack_from("<HH", data, 6)
    return _checked("gif", "image/gif", width, height, size)


def _sniff_bmp(data: bytes) -> ImageInfo:
    size = len(data)
    if size < 26:
        raise _corrupt("BMP", "it ends before the DIB header", size)
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:
        # OS/2 BITMAPCOREHEADER: 16-bit unsigned width and height.
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib_size >= 16:
        width, height = struct.unpack_from("<ii", data, 18)
        # A negative height marks a top-down bitmap, not a negative size.
        height = abs(height)
    else:
        raise _corrupt("BMP", f"the DIB header size {dib_size} is not a known BMP header", size)
    return _checked("bmp", "image/bmp", width, height, size)


def _sniff_webp(data: bytes) -> ImageInfo:
    size = len(data)
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # Lossy: 3-byte frame tag, start code 9D 01 2A, then 14-bit width and height.
        if size < 30 or data[23:26] != b"\x9d\x01\x2a":
            raise _corrupt("WebP", "the VP8 key frame header is missing or cut short", size)
        width, height = struct.unpack_from("<HH", data, 26)
        return _checked("webp", "image/webp", width & 0x3FFF, height & 0x3FFF, size)
    if chunk == b"VP8L":
        # Lossless: signature 0x2F, then width-1 and height-1 packed in 14 bits each.
        if size < 25 or data[20] != 0x2F:
            raise _corrupt("WebP", "the VP8L header is missing or cut short", size)
        (bits,) = struct.unpack_from("<I", data, 21)
        return _checked(
            "webp", "image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, size
        )
    if chunk == b"VP8X":
        # Extended: flags and reserved (4 bytes), then canvas width-1 and height-1 in 24 bits.
        if size < 30:
            raise _corrupt("WebP", "the VP8X header is cut short", size)
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _checked("webp", "image/webp", width, height, size)
    raise _corrupt("WebP", f"the first chunk {chunk!r} is not VP8, VP8L or VP8X", size)
