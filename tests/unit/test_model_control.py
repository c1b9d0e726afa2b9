"""The model switch's pure parts: the control topic's records, fitting a frame letterboxed for
one model to another's input size, and reprocess jobs found unfinished after a restart."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from framewire.config import load_settings
from framewire.contracts import FrameHeader, FramePreprocessed
from framewire.gateway.jobs import ReprocessJob, ReprocessJobs
from framewire.models.control import MODEL_KEY, ModelRequest, latest_request, model_value
from framewire.pixels.letterbox import Letterbox, letterbox, unletterbox_boxes
from framewire.services.inference.stage import refit

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def request(model: str) -> bytes:
    return model_value(ModelRequest(model=model, requested_at=NOW, by="tests"))


def test_the_latest_model_record_counts_a_tombstone_returns_to_the_configured_one():
    key = MODEL_KEY.encode()
    assert latest_request([]) is not None  # nothing said: not a request, not a tombstone
    found = latest_request([(key, request("a")), (b"other.setting", b"{}"),
                            (key, request("b"))])
    assert isinstance(found, ModelRequest) and found.model == "b" and found.by == "tests"
    assert latest_request([(key, request("a")), (key, None)]) is None
    # a bad record is skipped: the model before it stays
    kept = latest_request([(key, request("a")), (key, b"not json"), (key, b'{"model": ""}')])
    assert isinstance(kept, ModelRequest) and kept.model == "a"


def test_a_frame_letterboxed_for_another_size_is_fitted_and_its_boxes_map_to_the_original():
    # a 1280x720 frame with a bright square at x 600-700, y 300-400
    original = np.zeros((720, 1280, 3), np.uint8)
    original[300:400, 600:700] = 255
    boxed, lb = letterbox(original, 640, 384)
    header = FrameHeader(frame_id="F1", camera_id="cam-1", seq=0, captured_at=NOW,
                         ingested_at=NOW)
    frame = FramePreprocessed(
        header=header, preprocessed_at=NOW, orig_width=1280, orig_height=720,
        input_width=640, input_height=384, scale=lb.scale, pad_x=lb.pad_x, pad_y=lb.pad_y,
        pixel_format="bgr8", brightness=0.0, sharpness=0.0, too_dark=False, blurred=False,
        frozen=False)
    for width, height in ((320, 192), (960, 640)):
        fitted, image = refit(frame, boxed, width, height)
        assert image.shape == (height, width, 3)
        assert (fitted.input_width, fitted.input_height) == (width, height)
        assert fitted.header is frame.header and fitted.orig_width == 1280
        ys, xs = np.nonzero(image[:, :, 0] > 128)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1.0, 0]], np.float32)
        back = unletterbox_boxes(box, Letterbox(fitted.scale, fitted.pad_x, fitted.pad_y,
                                                width, height), 1280, 720)
        assert np.allclose(back[0, :4], [600, 300, 700, 400], atol=8), back


def test_a_job_the_gateway_was_running_when_it_stopped_is_listed_as_failed_saying_so(
        tmp_path: Path):
    settings = load_settings(home=str(tmp_path))
    folder = tmp_path / "state" / "reprocess"
    running = ReprocessJob("J1", "cam-1", NOW, NOW, "token:x", NOW, state="running",
                           records_found=3, records_replayed=3, started_at=NOW,
                           frame_ids=["F1", "F2", "F3"])
    done = ReprocessJob("J2", "cam-2", NOW, NOW, "token:x", NOW, state="done",
                        finished_at=NOW)
    for job in (running, done):
        job.save(folder)
    jobs = ReprocessJobs(settings, db=None)  # type: ignore[arg-type]  (nothing read here)
    assert {j.job_id: j.state for j in jobs.jobs.values()} == {"J1": "failed", "J2": "done"}
    failed = jobs.jobs["J1"]
    assert "gateway stopped while the job was running" in (failed.error or "")
    assert failed.frame_ids == ["F1", "F2", "F3"] and failed.finished_at is not None
    on_disk = json.loads((folder / "J1.json").read_text())
    assert on_disk["state"] == "failed"
    assert stat.S_IMODE((folder / "J1.json").stat().st_mode) == 0o600
