"""Privacy mode: faces blurred before a frame is stored, raw frames kept off the blob store,
a short retention for raw frames, and the results table growing its new columns in place."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from skimage import data as samples

from framewire.config import Settings, duration_ms
from framewire.contracts import FrameHeader, FramePreprocessed, utcnow
from framewire.errors import ConfigError, DataError
from framewire.models.manifest import ModelManifest, load_manifest
from framewire.pixels.letterbox import letterbox, unletterbox_boxes
from framewire.pixels.redact import blur_regions, fit_within
from framewire.services.inference.frames import THUMBNAIL_SIDE, FrameKeeper
from framewire.services.inference.models import Detector
from framewire.store.blobs import PRIVATE_INLINE_LIMIT, BlobStore, inline_or_reference
from framewire.store.db import open_database
from framewire.store.tables import result_table
from tests.fixtures.images import ASTRONAUT_FACE
from tests.fixtures.kafka import Site, wait_until

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def centerface() -> ModelManifest:
    return load_manifest("centerface")


@pytest.fixture(scope="module")
def finder(centerface: ModelManifest) -> Detector:
    """CenterFace reporting every candidate down to a score of 0.01 (the site's threshold is
    0.5): what a blurred face still scores."""
    return Detector(centerface.model_copy(update={"score_threshold": 0.01}), CPU)


def face_score(finder: Detector, bgr: np.ndarray, face: tuple[float, ...]) -> float:
    """The best score of any candidate face whose centre lies inside ``face`` (x1, y1, x2, y2
    in ``bgr``'s pixels); 0 when there is none."""
    boxed, lb = letterbox(bgr, 640, 384)
    found = unletterbox_boxes(finder.detect([boxed])[0], lb, bgr.shape[1], bgr.shape[0])
    cx, cy = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
    inside = (cx >= face[0]) & (cx <= face[2]) & (cy >= face[1]) & (cy <= face[3])
    return float(found[inside, 4].max()) if inside.any() else 0.0


def astronaut() -> np.ndarray:
    return np.ascontiguousarray(samples.astronaut()[..., ::-1])


def preprocessed(privacy: bool) -> tuple[FramePreprocessed, np.ndarray]:
    """The astronaut photo as preprocess sends it (letterboxed to 640x384), and its pixels."""
    boxed, lb = letterbox(astronaut(), 640, 384)
    now = utcnow()
    record = FramePreprocessed(
        header=FrameHeader(frame_id="01HPRIVACY", camera_id="cam", seq=0, captured_at=now,
                           ingested_at=now, privacy=privacy),
        preprocessed_at=now, orig_width=512, orig_height=512, input_width=640,
        input_height=384, scale=lb.scale, pad_x=lb.pad_x, pad_y=lb.pad_y, pixel_format="bgr8",
        brightness=100.0, sharpness=100.0, too_dark=False, blurred=False, frozen=False)
    return record, boxed


def site(tmp_path: Path, **values: object) -> Settings:
    return Settings(home=tmp_path / "home", blob_dir=tmp_path / "blobs", **values)


def kept_image(blobs: BlobStore, uri: str | None) -> np.ndarray:
    assert uri is not None
    image = cv2.imdecode(np.frombuffer(blobs.get(uri), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_blurring_the_face_box_takes_the_astronauts_face_below_any_detection(
        finder: Detector) -> None:
    photo = astronaut()
    before = face_score(finder, photo, ASTRONAUT_FACE)
    after = face_score(finder, blur_regions(photo, np.array([ASTRONAUT_FACE])), ASTRONAUT_FACE)
    print(f"astronaut face region: best CenterFace score {before:.3f} before blurring, "
          f"{after:.3f} after")
    assert before >= 0.8
    assert after < 0.25  # the site's threshold is 0.5
    # only the widened box changed: the rest of the photo is as it was
    changed = np.argwhere(np.any(blur_regions(photo, np.array([ASTRONAUT_FACE])) != photo, -1))
    (top, left), (bottom, right) = changed.min(0), changed.max(0)
    assert left >= 187 - 21 and right <= 267 + 21 and top >= 72 - 26 and bottom <= 173 + 26


def test_the_stored_frame_and_thumbnail_of_a_private_frame_show_no_face(
        tmp_path: Path, centerface: ModelManifest, finder: Detector) -> None:
    settings = site(tmp_path)
    blobs = BlobStore.from_settings(settings)
    keeper = FrameKeeper(settings, centerface, blobs)
    record, pixels = preprocessed(privacy=True)
    found = Detector(centerface, CPU).detect([pixels])[0]
    assert len(found) == 1

    kept = keeper.keep(record, pixels, found)

    assert kept.faces_blurred == 1
    frame, thumb = kept_image(blobs, kept.frame_uri), kept_image(blobs, kept.thumbnail_uri)
    # the frame as the model saw it (0.75 of the photo), never padded nor enlarged
    assert frame.shape == (384, 384, 3) and max(thumb.shape[:2]) <= THUMBNAIL_SIDE
    face = tuple(v * 0.75 for v in ASTRONAUT_FACE)
    score = face_score(finder, frame, face)
    print(f"stored frame, face region: best CenterFace score {score:.3f}")
    assert score < 0.25
    assert len(Detector(centerface, CPU).detect([letterbox(frame, 640, 384)[0]])[0]) == 0
    assert sorted(p.name for p in blobs.root.rglob("*.bin")) == sorted(
        Path(u).name for u in (kept.frame_uri, kept.thumbnail_uri))


def test_a_camera_out_of_privacy_mode_keeps_its_frame_as_seen(
        tmp_path: Path, centerface: ModelManifest, finder: Detector) -> None:
    settings = site(tmp_path)
    blobs = BlobStore.from_settings(settings)
    record, pixels = preprocessed(privacy=False)
    found = Detector(centerface, CPU).detect([pixels])[0]

    kept = FrameKeeper(settings, centerface, blobs).keep(record, pixels, found)

    assert kept.faces_blurred == 0
    face = tuple(v * 0.75 for v in ASTRONAUT_FACE)
    assert face_score(finder, kept_image(blobs, kept.frame_uri), face) >= 0.8


@pytest.mark.parametrize(("policy", "detections", "kept"), [
    ("detections", 0, False), ("detections", 1, True), ("all", 0, True), ("none", 1, False)])
def test_store_frames_says_which_frames_are_kept(
        tmp_path: Path, centerface: ModelManifest, policy: str, detections: int,
        kept: bool) -> None:
    settings = site(tmp_path, inference={"store_frames": policy})
    record, pixels = preprocessed(privacy=True)
    boxes = np.array([[300, 50, 360, 130, 0.9, 0]] * detections, np.float32).reshape(-1, 6)
    result = FrameKeeper(settings, centerface, BlobStore.from_settings(settings)).keep(
        record, pixels, boxes)
    assert (result.frame_uri is not None) is kept
    assert (result.thumbnail_uri is not None) is kept


def test_privacy_mode_with_a_model_that_finds_no_faces_fails_at_start(
        tmp_path: Path, centerface: ModelManifest) -> None:
    people = centerface.model_copy(update={"name": "people", "class_names": ["person"]})
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(ConfigError, match="STORE_FRAMES=none.*PRIVACY_MODE=false"):
        FrameKeeper(site(tmp_path), people, blobs)
    # frames kept unblurred, or none kept: nothing to refuse
    FrameKeeper(site(tmp_path, privacy_mode=False), people, blobs)
    FrameKeeper(site(tmp_path, inference={"store_frames": "none"}), people, blobs)


def test_private_bytes_never_reach_the_blob_store(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"\xff" * 5000
    assert inline_or_reference(data, 1024, blobs, private=True) == (data, None, None)
    assert not list(blobs.root.rglob("*.bin"))
    with pytest.raises(DataError) as err:
        inline_or_reference(b"\0" * (PRIVATE_INLINE_LIMIT + 1), 1024, blobs, private=True)
    assert err.value.code == "too_large" and "privacy mode" in err.value.reason
    assert not list(blobs.root.rglob("*.bin"))
    inline, uri, _ = inline_or_reference(data, 1024, blobs)  # not private: the claim check
    assert inline is None and uri is not None


def test_privacy_mode_is_per_camera_and_shortens_raw_frames_retention(tmp_path: Path) -> None:
    cameras = [{"camera_id": "lobby", "url": "/x", "privacy_mode": False},
               {"camera_id": "door", "url": "/y"}]
    on = site(tmp_path, cameras=cameras)
    assert (on.privacy_for("lobby"), on.privacy_for("door"), on.privacy_for("new")) == (
        False, True, True)
    assert on.retention_ms("frames.raw") == duration_ms("1h")
    assert on.retention_ms("detections") == duration_ms("30d")
    off = site(tmp_path, privacy_mode=False,
               cameras=[{"camera_id": "door", "url": "/y", "privacy_mode": True}])
    assert (off.privacy_for("door"), off.privacy_for("new")) == (True, False)
    assert off.retention_ms("frames.raw") == duration_ms("24h")
    told = site(tmp_path, retention={"frames.raw": "6h"})
    assert told.retention_ms("frames.raw") == duration_ms("6h")


def test_an_older_results_table_gets_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    older = sa.MetaData()
    new = ("privacy", "frame_uri", "thumbnail_uri", "faces_blurred")
    sa.Table("results", older, *(sa.Column(c.name, c.type, primary_key=c.primary_key,
                                           nullable=c.nullable)
                                 for c in result_table.c if c.name not in new))
    engine = sa.create_engine(url)
    older.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO results (frame_id, camera_id, seq, captured_at, ingested_at, "
            "preprocessed_at, inferred_at, stored_at, orig_width, orig_height, model_name, "
            "model_version, provider, too_dark, blurred, frozen, detection_count) VALUES "
            "('f1', 'cam', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 10, 10, "
            "'m', '1', 'CPU', 0, 0, 0, 0)"))
    engine.dispose()

    with open_database(url) as db:
        (row,) = db.query_results(camera_id="cam")
    assert (row.frame_id, row.privacy, row.frame_uri, row.faces_blurred) == ("f1", True, None, 0)


def test_fit_within_shrinks_only_what_is_larger() -> None:
    image = np.zeros((100, 400, 3), np.uint8)
    assert fit_within(image, 200).shape == (50, 200, 3)
    assert fit_within(image, 500) is image


def test_a_camera_added_at_run_time_brings_its_own_privacy_mode_and_retention(
        tmp_path: Path) -> None:
    from framewire.config import CameraSettings
    from framewire.ops.sweeper import retention_of

    settings = site(tmp_path, cameras=[{"camera_id": "door", "url": "/y", "retention": "7d"}])
    # the cameras topic replaced door and added lobby (what ingest and the sweeper follow)
    running = {"door": CameraSettings(camera_id="door", url="/z", privacy_mode=False),
               "lobby": CameraSettings(camera_id="lobby", url="/x", retention="2h")}
    assert settings.privacy_for("door") is True
    assert settings.privacy_for("door", running) is False
    assert settings.privacy_for("lobby", running) is True  # its own unset: the site's
    assert retention_of(settings, "door").days == 7
    assert retention_of(settings, "door", running).days == 30  # the topic's has none
    assert retention_of(settings, "lobby", running).total_seconds() == 7200


def test_a_dead_letter_keeps_a_private_frame_off_the_blob_store(site: Site) -> None:
    """A camera in privacy mode on a site without it (a camera added at run time): its frame's
    dead letter keeps the bytes in the letter; a frame known not to be private takes the claim
    check; a record that did not decode counts as private."""
    from framewire.contracts import DeadLetter
    from framewire.ops.status import dead_letters
    from framewire.runtime import Publisher

    site.env.update({"FRAMEWIRE_PRIVACY_MODE": "false", "FRAMEWIRE_MAX_INLINE_BYTES": "1024"})
    settings = site.settings
    frame = b"\xff\xd8" + b"pixels of a face " * 200
    publisher = Publisher(settings, "test")
    for camera, private in (("cam-private", True), ("cam-open", False)):
        publisher.dead_letter(DataError("corrupt_pixels", "test"), payload=frame,
                              key=camera.encode(), camera_id=camera, private=private)
    publisher.dead_letter(DataError("undecodable", "test"), payload=frame, key=b"cam-unknown")
    publisher.flush(10)
    wait_until(lambda: len(dead_letters(settings)) == 3, 30, "the three dead letters")
    letters: dict[str | None, DeadLetter] = {d.camera_id: d for _, d in dead_letters(settings)}
    for camera in ("cam-private", "cam-unknown"):
        assert (letters[camera].payload, letters[camera].payload_uri) == (frame, None)
    assert letters["cam-open"].payload is None and letters["cam-open"].payload_uri
    assert [p.name for p in BlobStore.from_settings(settings).root.rglob("*.bin")] == [
        Path(letters["cam-open"].payload_uri).name]
