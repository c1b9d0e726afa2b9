"""Encoded images in and out: decoding with pixel limits (at the size a model needs), JPEG."""

from __future__ import annotations

import cv2
import numpy as np

from framewire.errors import DataError
from framewire.pixels.imageinfo import ImageInfo, sniff_image


def _imdecode(data: bytes) -> np.ndarray | None:
    """Decode with OpenCV to BGR uint8; None when OpenCV cannot make an image of it."""
    try:
        # IMREAD_COLOR applies EXIF orientation and turns grey, alpha, CMYK and 16-bit into BGR8.
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        # Some codecs throw instead of returning None; both mean the same to a caller.
        return None


def _checked_info(data: bytes, max_pixels: int) -> ImageInfo:
    """The header's format and size, refusing images over the pixel limit before decoding."""
    info = sniff_image(data)
    if info.width * info.height > max_pixels:
        raise DataError(
            "too_many_pixels",
            f"The {info.format.upper()} image claims {info.width}x{info.height} = "
            f"{info.width * info.height} pixels, over the limit of {max_pixels}; it was not "
            f"decoded. Raise FRAMEWIRE_MAX_PIXELS or lower the camera resolution.",
        )
    return info


def _decoded_or_error(img: np.ndarray | None, info: ImageInfo, data: bytes) -> np.ndarray:
    if img is None or img.size == 0:
        raise DataError(
            "corrupt_image",
            f"The {info.format.upper()} image ({info.width}x{info.height}, {len(data)} bytes) "
            f"has a valid header but its pixel data cannot be decoded; the file is truncated "
            f"or damaged. Re-capture or re-upload it.",
        )
    return img


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an encoded image to BGR uint8 HxWx3, refusing oversized ones before decoding."""
    info = _checked_info(data, max_pixels)
    return _decoded_or_error(_imdecode(data), info, data)


# OpenCV's flags for a JPEG decoded straight to 1/2, 1/4 or 1/8 of its size (libjpeg scales in
# the DCT, so the skipped pixels are never computed): 2.5 ms instead of 8.3 at 720p.
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def jpeg_reduction(info: ImageInfo, width: int, height: int) -> int:
    """The largest DCT scale-down (1, 2, 4 or 8) that still leaves the letterboxed size.

    Both orientations are checked, since EXIF orientation may turn the image on decoding.
    """
    if info.format != "jpeg":
        return 1
    best = 8
    for src_w, src_h in ((info.width, info.height), (info.height, info.width)):
        scale = min(width / src_w, height / src_h, 1.0)
        reduction = 8
        while reduction > 1 and (src_w // reduction < src_w * scale
                                 or src_h // reduction < src_h * scale):
            reduction //= 2
        best = min(best, reduction)
    return best


def decode_for_model(data: bytes, max_pixels: int, width: int,
                     height: int) -> tuple[np.ndarray, int, int]:
    """Decode only as many pixels as a width x height letterbox needs.

    Returns the BGR image (a JPEG may come out at 1/2, 1/4 or 1/8 of its size) and the
    original width and height (after EXIF orientation), which boxes are mapped back to.
    """
    info = _checked_info(data, max_pixels)
    reduction = jpeg_reduction(info, width, height)
    if reduction == 1:
        img = _decoded_or_error(_imdecode(data), info, data)
        return img, img.shape[1], img.shape[0]
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[reduction])
    except cv2.error:
        decoded = None
    img = _decoded_or_error(decoded, info, data)
    turned = (img.shape[1] > img.shape[0]) != (info.width > info.height)
    if turned and info.width != info.height:
        return img, info.height, info.width
    return img, info.width, info.height


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """Encode a BGR uint8 image as JPEG."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {img.shape} as JPEG")
    return buf.tobytes()


def decode_pixels(data: bytes, pixel_format: str, width: int, height: int) -> np.ndarray:
    """Turn a frame's pixel payload ("jpeg" or raw "bgr8") into a BGR uint8 HxWx3 array.

    A "bgr8" result is a read-only view of ``data``: copy it before writing to it.
    """
    if pixel_format == "bgr8":
        expected = width * height * 3
        if len(data) != expected:
            raise DataError(
                "corrupt_pixels",
                f"The bgr8 payload has {len(data)} bytes but {width}x{height}x3 needs "
                f"{expected}; the producer wrote the wrong size. Fix the width, height or "
                f"payload at the producer.",
            )
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    if pixel_format == "jpeg":
        # a record's payload comes from anyone who can write to the topic: read its header
        # first, so a few-KB JPEG declaring 32768x32768 (or another format OpenCV would also
        # decode) is refused before a byte of pixels is allocated
        try:
            info = sniff_image(data)
        except DataError as exc:
            raise DataError("corrupt_pixels", f"The jpeg payload's header is unreadable: "
                            f"{exc.reason}") from None
        if info.format != "jpeg" or (info.width, info.height) != (width, height):
            raise DataError(
                "corrupt_pixels",
                f"The jpeg payload's header says {info.format} {info.width}x{info.height} "
                f"but the record says jpeg {width}x{height}; nothing was decoded. Fix the "
                f"producer of frames.ready.",
            )
        img = _imdecode(data)
        if img is None:
            raise DataError(
                "corrupt_pixels",
                f"The jpeg payload ({len(data)} bytes) cannot be decoded; it was damaged "
                f"between stages. Check the producer and the blob store.",
            )
        if img.shape[:2] != (height, width):
            raise DataError(
                "corrupt_pixels",
                f"The jpeg payload decodes to {img.shape[1]}x{img.shape[0]} but the record "
                f"says {width}x{height}; fix the width and height at the producer.",
            )
        return img
    raise DataError(
        "unsupported_pixel_format",
        f"Pixel format {pixel_format!r} is not supported; use 'jpeg' or 'bgr8'.",
    )
