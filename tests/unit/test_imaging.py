"""Pixel work: decode limits and errors, letterbox geometry, quality, frozen frames."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from framewire.errors import DataError
from framewire.pixels import encoding
from framewire.pixels.encoding import decode_for_model, decode_image, decode_pixels, encode_jpeg
from framewire.pixels.letterbox import Letterbox, content, letterbox, unletterbox_boxes
from framewire.services.preprocess.quality import FrozenDetector, assess_quality
from tests.fixtures.images import jpeg_claiming_size, synthetic_frame

LIMIT = 40_000_000


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def decode_error(data: bytes, max_pixels: int = LIMIT) -> DataError:
    with pytest.raises(DataError) as err:
        decode_image(data, max_pixels)
    return err.value


# --- decode_image ------------------------------------------------------------------------


def test_jpeg_decodes_to_bgr_uint8_of_its_size() -> None:
    img = decode_image(encode_jpeg(synthetic_frame(0, width=320, height=180)), LIMIT)
    assert (img.shape, img.dtype) == ((180, 320, 3), np.uint8)


def test_bad_inputs_get_distinct_codes() -> None:
    good = encode_jpeg(synthetic_frame(1))
    codes = [
        decode_error(b"").code,
        decode_error(b"camera 7 notes: lens cleaned on Tuesday\n" * 10).code,
        decode_error(good[: len(good) // 2]).code,
        decode_error(jpeg_claiming_size(60000, 60000)).code,
    ]
    assert codes == ["empty", "not_an_image", "corrupt_image", "too_many_pixels"]


def test_jpeg_header_claiming_60000x60000_is_rejected_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_decode(*args: object) -> None:
        raise AssertionError("cv2.imdecode was called on a decompression bomb")

    monkeypatch.setattr(encoding.cv2, "imdecode", must_not_decode)
    err = decode_error(jpeg_claiming_size(60000, 60000))
    assert err.code == "too_many_pixels"
    assert "60000x60000" in err.reason and str(LIMIT) in err.reason
    assert "FRAMEWIRE_MAX_PIXELS" in err.reason and "camera resolution" in err.reason


def test_truncated_jpeg_with_an_intact_header_is_corrupt() -> None:
    data = encode_jpeg(synthetic_frame(2))
    assert decode_error(data[: int(len(data) * 0.9)]).code == "corrupt_image"


def test_sixteen_bit_png_decodes_to_uint8() -> None:
    img = decode_image(png(np.full((8, 6, 3), 65535, np.uint16)), LIMIT)
    assert (img.shape, img.dtype, int(img.min())) == ((8, 6, 3), np.uint8, 255)


def test_grayscale_png_decodes_to_three_equal_channels() -> None:
    img = decode_image(png(np.full((8, 6), 77, np.uint8)), LIMIT)
    assert img.shape == (8, 6, 3)
    assert np.all(img == 77)


def test_rgba_png_decodes_to_bgr_without_alpha() -> None:
    bgra = np.zeros((8, 6, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 10
    img = decode_image(png(bgra), LIMIT)
    assert img.shape == (8, 6, 3)
    assert img[0, 0].tolist() == [200, 0, 0]


def test_cmyk_jpeg_decodes_to_bgr() -> None:
    buf = io.BytesIO()
    Image.new("CMYK", (40, 20), (0, 255, 0, 0)).save(buf, "JPEG")
    img = decode_image(buf.getvalue(), LIMIT)
    assert img.shape == (20, 40, 3)
    # Magenta: full blue and red, no green.
    assert np.abs(img[10, 20].astype(int) - [255, 0, 255]).max() <= 3


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue(), LIMIT).shape == (40, 20, 3)


def test_one_by_one_image_decodes() -> None:
    img = decode_image(png(np.array([[[1, 2, 3]]], np.uint8)), LIMIT)
    assert img.tolist() == [[[1, 2, 3]]]


def test_image_exactly_at_the_pixel_limit_is_accepted() -> None:
    assert decode_image(png(np.zeros((10, 10, 3), np.uint8)), max_pixels=100).shape == (10, 10, 3)


# --- decode_for_model: only the pixels the letterbox needs --------------------------------


@pytest.mark.parametrize(
    ("size", "decoded"),
    [
        ((1280, 720), (640, 360)),  # exactly the letterbox's width at 1/2
        ((1920, 1080), (960, 540)),  # 1/4 would be 480 wide, too small for 640
        ((3840, 2160), (960, 540)),  # 1/4
        ((640, 384), (640, 384)),  # already the input size: no reduction
    ],
)
def test_large_jpegs_decode_reduced_but_keep_their_original_size(
    size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    w, h = size
    img, orig_w, orig_h = decode_for_model(encode_jpeg(synthetic_frame(0, width=w, height=h)),
                                           LIMIT, 640, 384)
    assert (img.shape[1], img.shape[0], orig_w, orig_h) == (*decoded, w, h)


def test_png_is_decoded_whole() -> None:
    img, orig_w, orig_h = decode_for_model(png(np.zeros((720, 1280, 3), np.uint8)), LIMIT,
                                           640, 384)
    assert (img.shape, orig_w, orig_h) == ((720, 1280, 3), 1280, 720)


def test_reduced_decode_of_an_exif_rotated_jpeg_reports_the_turned_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1080, 1920, 3), np.uint8)).save(buf, "JPEG", exif=exif)
    img, orig_w, orig_h = decode_for_model(buf.getvalue(), LIMIT, 640, 384)
    assert (orig_w, orig_h) == (1080, 1920)
    assert img.shape[0] > img.shape[1] >= 216  # portrait, at least the letterboxed width


def test_reduced_decode_still_refuses_oversized_and_corrupt_images() -> None:
    good = encode_jpeg(synthetic_frame(1, width=1920, height=1080))
    with pytest.raises(DataError) as big:
        decode_for_model(jpeg_claiming_size(60000, 60000), LIMIT, 640, 384)
    with pytest.raises(DataError) as cut:
        decode_for_model(good[: len(good) // 3], LIMIT, 640, 384)
    assert (big.value.code, cut.value.code) == ("too_many_pixels", "corrupt_image")


def test_box_found_in_a_reduced_decode_maps_back_to_the_original_frame() -> None:
    src_w, src_h = 1920, 1080
    img = np.zeros((src_h, src_w, 3), np.uint8)
    drawn = (401, 333, 1237, 861)
    cv2.rectangle(img, drawn[:2], (drawn[2] - 1, drawn[3] - 1), (255, 255, 255), -1)
    small, orig_w, orig_h = decode_for_model(encode_jpeg(img, 95), LIMIT, 640, 384)
    assert small.shape[1] < src_w
    boxed, lb = letterbox(small, 640, 384, fill=0, source_size=(orig_w, orig_h))
    ys, xs = np.nonzero(boxed[..., 0] > 127)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, 0]], np.float32)
    mapped = unletterbox_boxes(found, lb, orig_w, orig_h)
    assert np.abs(mapped[0, :4] - drawn).max() <= 1.5 / lb.scale


# --- letterbox ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src_w", "src_h", "scale", "pad_x", "pad_y"),
    [
        (1280, 720, 0.5, 0.0, 12.0),  # landscape 16:9, shrunk
        (720, 1280, 0.3, 212.0, 0.0),  # portrait, shrunk hard (INTER_AREA)
        (100, 50, 6.4, 0.0, 32.0),  # small, enlarged
        (640, 384, 1.0, 0.0, 0.0),  # already the input size
    ],
)
def test_letterbox_keeps_aspect_ratio_and_centres_the_image(
    src_w: int, src_h: int, scale: float, pad_x: float, pad_y: float
) -> None:
    img = np.full((src_h, src_w, 3), 200, np.uint8)
    boxed, lb = letterbox(img, 640, 384)
    assert boxed.shape == (384, 640, 3)
    assert (lb.scale, lb.pad_x, lb.pad_y, lb.input_width, lb.input_height) == (
        pytest.approx(scale), pad_x, pad_y, 640, 384)
    inner = boxed[int(pad_y) : 384 - int(pad_y), int(pad_x) : 640 - int(pad_x)]
    assert np.all(inner == 200)
    assert content(boxed, lb).shape == inner.shape
    assert np.all(boxed[: int(pad_y)] == 114) and np.all(boxed[:, : int(pad_x)] == 114)


@pytest.mark.parametrize(("src_w", "src_h"), [(1280, 720), (720, 1280), (512, 512), (451, 300)])
def test_rectangle_found_in_letterboxed_pixels_maps_back_to_where_it_was_drawn(
    src_w: int, src_h: int
) -> None:
    img = np.zeros((src_h, src_w, 3), np.uint8)
    drawn = (src_w // 5, src_h // 3, src_w // 2, src_h * 3 // 4)
    cv2.rectangle(img, drawn[:2], (drawn[2] - 1, drawn[3] - 1), (255, 255, 255), -1)
    boxed, lb = letterbox(img, 640, 384, fill=0)
    ys, xs = np.nonzero(boxed[..., 0] > 127)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, 3]], np.float32)
    mapped = unletterbox_boxes(found, lb, src_w, src_h)
    tolerance = 1.5 / lb.scale  # a pixel and a half of resampling at model-input scale
    assert np.abs(mapped[0, :4] - drawn).max() <= tolerance


def test_unletterbox_inverts_the_letterbox_mapping() -> None:
    lb = Letterbox(scale=0.3, pad_x=212.0, pad_y=0.0, input_width=640, input_height=384)
    original = np.array([[10.0, 20.0, 300.0, 1000.0, 0.8, 1.0]], np.float32)
    forward = original.copy()
    forward[:, [0, 2]] = original[:, [0, 2]] * lb.scale + lb.pad_x
    forward[:, [1, 3]] = original[:, [1, 3]] * lb.scale + lb.pad_y
    np.testing.assert_allclose(unletterbox_boxes(forward, lb, 720, 1280), original, atol=1e-3)


def test_unletterbox_clips_to_the_image_and_leaves_other_columns_alone() -> None:
    lb = Letterbox(scale=0.5, pad_x=0.0, pad_y=12.0, input_width=640, input_height=384)
    boxes = np.array([[-10.0, 0.0, 700.0, 384.0, 0.7, 2.0, 42.0]], np.float32)
    mapped = unletterbox_boxes(boxes, lb, 1280, 720)
    assert mapped.tolist() == [[0.0, 0.0, 1280.0, 720.0, pytest.approx(0.7), 2.0, 42.0]]


# --- quality -----------------------------------------------------------------------------


def checkerboard(size: int = 480, cell: int = 8) -> np.ndarray:
    cells = (np.indices((size, size)) // cell).sum(axis=0) % 2
    return np.repeat((cells * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_black_image_is_too_dark() -> None:
    quality = assess_quality(np.zeros((480, 640, 3), np.uint8))
    assert (quality.brightness, quality.too_dark) == (0.0, True)


def test_sharp_checkerboard_is_bright_enough_and_not_blurred() -> None:
    quality = assess_quality(checkerboard())
    assert quality.brightness == pytest.approx(127.5, abs=1)
    assert not quality.too_dark and not quality.blurred


def test_heavily_blurred_checkerboard_is_blurred() -> None:
    blurred = cv2.GaussianBlur(checkerboard(), (0, 0), sigmaX=6)
    quality = assess_quality(blurred)
    assert quality.blurred
    assert quality.sharpness < assess_quality(checkerboard()).sharpness


def test_large_frames_are_measured_on_a_downscaled_copy() -> None:
    # 3-pixel stripes average out when 3840 wide shrinks 6x to 640, so the 4K frame reads as
    # blurred while a 640-wide crop reads as sharp: quality is judged at the model's scale.
    stripes = np.zeros((2160, 3840, 3), np.uint8)
    stripes[:, (np.arange(3840) % 6) < 3] = 255
    assert assess_quality(stripes).blurred
    assert not assess_quality(stripes[:360, :640]).blurred


# --- frozen frames -----------------------------------------------------------------------


def test_identical_second_frame_is_frozen_and_a_changed_pixel_is_not() -> None:
    detector = FrozenDetector()
    frame = synthetic_frame(3)
    changed = frame.copy()
    changed[0, 0, 0] ^= 1
    assert [
        detector.is_frozen("cam1", frame),
        detector.is_frozen("cam1", frame.copy()),
        detector.is_frozen("cam1", changed),
    ] == [False, True, False]


def test_cameras_are_tracked_separately() -> None:
    detector = FrozenDetector()
    frame = synthetic_frame(4)
    detector.is_frozen("cam1", frame)
    assert not detector.is_frozen("cam2", frame)


def test_least_recently_seen_camera_is_forgotten_beyond_max_cameras() -> None:
    detector = FrozenDetector(max_cameras=2)
    frame = synthetic_frame(5)
    for camera in ("a", "b", "a", "c"):  # "b" is now the least recently seen
        detector.is_frozen(camera, frame)
    assert detector.is_frozen("a", frame)
    assert not detector.is_frozen("b", frame)


# --- pixel payloads ----------------------------------------------------------------------


def test_jpeg_payload_round_trips_at_its_declared_size() -> None:
    frame = synthetic_frame(6, width=64, height=48)
    img = decode_pixels(encode_jpeg(frame, quality=95), "jpeg", 64, 48)
    assert img.shape == (48, 64, 3)
    assert np.abs(img.astype(int) - frame).mean() < 5


def test_bgr8_payload_is_a_view_of_the_bytes_without_a_copy() -> None:
    frame = synthetic_frame(7, width=64, height=48)
    data = frame.tobytes()
    img = decode_pixels(data, "bgr8", 64, 48)
    assert np.array_equal(img, frame)
    assert np.shares_memory(img, np.frombuffer(data, np.uint8))


@pytest.mark.parametrize(
    ("data", "pixel_format", "code"),
    [
        (bytes(64 * 48 * 3 - 1), "bgr8", "corrupt_pixels"),
        (b"\xff\xd8not really a jpeg", "jpeg", "corrupt_pixels"),
        (encode_jpeg(np.zeros((48, 32, 3), np.uint8)), "jpeg", "corrupt_pixels"),
        (bytes(10), "yuv420", "unsupported_pixel_format"),
    ],
    ids=["bgr8-wrong-length", "jpeg-undecodable", "jpeg-wrong-size", "unknown-format"],
)
def test_bad_pixel_payloads_are_rejected(data: bytes, pixel_format: str, code: str) -> None:
    with pytest.raises(DataError) as err:
        decode_pixels(data, pixel_format, 64, 48)
    assert err.value.code == code


@pytest.mark.parametrize("data", [
    jpeg_claiming_size(32768, 32768),
    cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes(),
], ids=["jpeg-bomb", "png-labelled-jpeg"])
def test_a_pixel_payload_is_checked_by_its_header_before_any_decoding(
        data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    import framewire.pixels.encoding as encoding

    def never(_data: bytes) -> None:
        raise AssertionError("the payload was decoded")

    monkeypatch.setattr(encoding, "_imdecode", never)
    with pytest.raises(DataError) as err:
        decode_pixels(data, "jpeg", 64, 48)
    assert err.value.code == "corrupt_pixels"
