"""Bad-input corpus: images and frames.raw records no service may fall over on.

Run from the repository root: `.venv/bin/python -m tests.data.bad.generate [OUT_DIR]`
(default `tests/data/generated/bad/`, git-ignored). Tests call `generate(tmp_path)` instead.

Every byte is generated here (numpy + OpenCV, Pillow for CMYK and EXIF); nothing is
downloaded. Images (`*.jpg`, `*.png`, `*.bin`, `*.txt`) are what a camera or uploader might
send through ingest. Records (`*.record`) are raw values for the ``frames.raw`` topic;
``records.json`` gives the Kafka key, headers and frame id each is to be produced with.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import fastavro
import numpy as np
from PIL import Image

from framewire.contracts import FrameCaptured, FrameHeader
from framewire.contracts.codec import MAGIC, Codec, schema_fingerprint
from tests.fixtures.images import jpeg, jpeg_claiming_size, synthetic_frame

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "generated" / "bad"
MANIFEST = "records.json"
# Stored landscape; EXIF orientation 6 says "rotate 90° clockwise to show", so it shows portrait.
EXIF_STORED_SIZE = (320, 160)
EXIF_SHOWN_SIZE = (160, 320)
_CAPTURED_AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # fixed, so the corpus is reproducible
_EXIF_ORIENTATION = 0x0112
_BOGUS_FINGERPRINT = 0xBAD0_BAD0_BAD0_BAD0


@dataclass(frozen=True)
class RecordRouting:
    """How a record case is produced to frames.raw: its key, headers and (if any) frame id."""

    key: str
    frame_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


# Frame ids are fixed so a test can find each record's outcome (result row or dead letter).
RECORDS: dict[str, RecordRouting] = {
    "record_wrong_fingerprint": RecordRouting(
        "cam-record-wrong-fingerprint", "01BADWR0NGF1NGERPR1NT00000"
    ),
    "record_missing_field": RecordRouting("cam-record-missing-field"),
    "record_missing_field_truncated": RecordRouting("cam-record-missing-field-truncated"),
    "record_empty_camera": RecordRouting("", "01BADEMPTYCAMERA0000000000"),
    "record_camera_not_key": RecordRouting("cam-record-key", "01BADCAMERAN0TKEY000000000"),
    "record_bad_traceparent": RecordRouting(
        "cam-record-bad-traceparent",
        "01BADTRACEPARENT0000000000",
        {"traceparent": "not-a-traceparent"},
    ),
}
# The camera id written inside each record, where it is not the key.
_CAMERA_IN_RECORD = {"record_empty_camera": "", "record_camera_not_key": "cam-record-other"}

IMAGE_FILES = {
    "truncated_jpeg": "truncated.jpg",
    "zero_bytes": "zero_bytes.jpg",
    "random_bytes": "random_bytes.bin",
    "text_file": "text_file.txt",
    "bomb_60000x60000": "bomb_60000x60000.jpg",
    "one_pixel": "one_pixel.jpg",
    "png_16bit": "png_16bit.png",
    "cmyk_jpeg": "cmyk.jpg",
    "exif_rotated": "exif_orientation_6.jpg",
}


def _rgb(index: int, width: int, height: int) -> np.ndarray:
    return cv2.cvtColor(synthetic_frame(index, width=width, height=height), cv2.COLOR_BGR2RGB)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {img.dtype} {img.shape} image as PNG")
    return buf.tobytes()


def _random_bytes() -> bytes:
    data = np.random.default_rng(20250101).bytes(4096)
    # it must not start like any accepted format, or it would test the decoder instead
    if data.startswith((b"\xff\xd8", b"\x89PNG", b"GIF8", b"RIFF", b"BM")):
        raise RuntimeError("the random seed happens to give an image signature; change the seed")
    return data


def _cmyk_jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(_rgb(2, 96, 64)).convert("CMYK").save(out, "JPEG", quality=90)
    return out.getvalue()


def _exif_rotated_jpeg() -> bytes:
    width, height = EXIF_STORED_SIZE
    image = Image.fromarray(_rgb(3, width, height))
    exif = image.getexif()
    exif[_EXIF_ORIENTATION] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def image_cases() -> dict[str, bytes]:
    """Case name → encoded bytes, for every image case (ingest's input)."""
    good = jpeg(synthetic_frame(1))
    rng = np.random.default_rng(16)
    deep = rng.integers(0, 65_536, (40, 60, 3), dtype=np.uint16)
    return {
        "truncated_jpeg": good[: len(good) // 2],  # header intact, scan data cut off
        "zero_bytes": b"",
        "random_bytes": _random_bytes(),
        "text_file": b"camera 7 notes: lens cleaned on Tuesday\n" * 10,
        "bomb_60000x60000": jpeg_claiming_size(60000, 60000),
        "one_pixel": jpeg(np.full((1, 1, 3), 128, np.uint8)),
        "png_16bit": _png(deep),
        "cmyk_jpeg": _cmyk_jpeg(),
        "exif_rotated": _exif_rotated_jpeg(),
    }


def _frame(name: str, routing: RecordRouting) -> FrameCaptured:
    return FrameCaptured(
        header=FrameHeader(
            frame_id=routing.frame_id or "01BADUNDEC0DABLE0000000000",
            camera_id=_CAMERA_IN_RECORD.get(name, routing.key),
            seq=0,
            captured_at=_CAPTURED_AT,
            ingested_at=_CAPTURED_AT,
        ),
        source="tests/data/bad",
        content_type="image/jpeg",
        width=160,
        height=120,
        image=jpeg(synthetic_frame(4, width=160, height=120)),
    )


def _frame_captured_schema() -> dict[str, Any]:
    text = resources.files("framewire.schemas").joinpath("FrameCaptured.v2.avsc").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def _without_camera_id(frame: FrameCaptured, fingerprint: int | None) -> bytes:
    """``frame`` written with a FrameCaptured schema lacking the required camera_id field.

    Framed with that schema's own fingerprint when ``fingerprint`` is None, else with
    ``fingerprint`` (which then misdescribes the body).
    """
    schema = _frame_captured_schema()
    header = next(f["type"] for f in schema["fields"] if f["name"] == "header")
    header["fields"] = [f for f in header["fields"] if f["name"] != "camera_id"]
    parsed = fastavro.parse_schema(schema, named_schemas={})
    data = frame.to_avro()
    del data["header"]["camera_id"]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, data)
    header = struct.pack(
        "<2sQ", MAGIC, schema_fingerprint(parsed) if fingerprint is None else fingerprint
    )
    return header + body.getvalue()


def record_cases(codec: Codec | None = None) -> dict[str, bytes]:
    """Case name → raw frames.raw value, for every record case (see ``RECORDS`` for keys)."""
    codec = codec or Codec()
    real_fingerprint = codec.latest(FrameCaptured.SCHEMA).fingerprint
    frames = {name: _frame(name, routing) for name, routing in RECORDS.items()}
    valid = {name: codec.encode(frame) for name, frame in frames.items()}
    wrong = bytearray(valid["record_wrong_fingerprint"])
    struct.pack_into("<Q", wrong, len(MAGIC), _BOGUS_FINGERPRINT)
    misframed = _without_camera_id(frames["record_missing_field_truncated"], real_fingerprint)
    return {
        "record_wrong_fingerprint": bytes(wrong),
        "record_missing_field": _without_camera_id(frames["record_missing_field"], None),
        "record_missing_field_truncated": misframed[: len(misframed) // 2],
        "record_empty_camera": valid["record_empty_camera"],
        "record_camera_not_key": valid["record_camera_not_key"],
        "record_bad_traceparent": valid["record_bad_traceparent"],
    }


def generate(out_dir: Path) -> dict[str, Path]:
    """Write every case into ``out_dir`` (plus ``records.json``); case name → file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, data in image_cases().items():
        written[name] = out_dir / IMAGE_FILES[name]
        written[name].write_bytes(data)
    for name, data in record_cases().items():
        written[name] = out_dir / f"{name}.record"
        written[name].write_bytes(data)
    manifest = {
        name: {
            "file": written[name].name,
            "topic": "frames.raw",
            "key": r.key,
            "headers": r.headers,
            "frame_id": r.frame_id,
        }
        for name, r in RECORDS.items()
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return written


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        sys.stderr.write("usage: python -m tests.data.bad.generate [OUT_DIR]\n")
        return 2
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT_DIR
    written = generate(out_dir)
    sys.stdout.write(f"wrote {len(written)} cases and {MANIFEST} to {out_dir}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
