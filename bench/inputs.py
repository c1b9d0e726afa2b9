"""The benchmark's input: demo-scene frames from 8 cameras at 720p and 1080p, cached as JPEGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2

JPEG_QUALITY = 85


@dataclass(frozen=True)
class BenchCamera:
    """One simulated camera: its id and frame size."""

    camera_id: str
    width: int
    height: int


# Half the cameras at 1280x720, half at 1920x1080: one mixed workload, like a real site.
CAMERAS = tuple(
    [BenchCamera(f"bench-720p-{i}", 1280, 720) for i in range(1, 5)]
    + [BenchCamera(f"bench-1080p-{i}", 1920, 1080) for i in range(1, 5)]
)


def cached_frames(cache_dir: Path, per_camera: int,
                  cameras: tuple[BenchCamera, ...] = CAMERAS) -> dict[str, list[Path]]:
    """JPEG files of the first ``per_camera`` frames of each camera, rendered once and kept."""
    from framewire.capture.demo import DemoScene

    files: dict[str, list[Path]] = {}
    for cam in cameras:
        folder = cache_dir / f"q{JPEG_QUALITY}" / f"{cam.camera_id}-{cam.width}x{cam.height}"
        paths = [folder / f"{i:05d}.jpg" for i in range(per_camera)]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            folder.mkdir(parents=True, exist_ok=True)
            scene = DemoScene(cam.camera_id, cam.width, cam.height)
            for i in missing:
                frame, _ = scene.render(i)
                ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise RuntimeError(f"OpenCV could not encode demo frame {i} of {cam}")
                # write then rename: an interrupted run never leaves half a JPEG in the cache
                tmp = paths[i].with_suffix(".tmp")
                tmp.write_bytes(buf.tobytes())
                tmp.replace(paths[i])
        files[cam.camera_id] = paths
    return files


def read_frames(files: dict[str, list[Path]]) -> dict[str, list[bytes]]:
    """The cached JPEGs' bytes, by camera."""
    return {camera: [p.read_bytes() for p in paths] for camera, paths in files.items()}


def round_robin(frames: dict[str, list[bytes]], n: int) -> tuple[str, bytes]:
    """The ``n``-th frame of a feed that takes one frame from each camera in turn, cycling."""
    cameras = sorted(frames)
    camera = cameras[n % len(cameras)]
    own = frames[camera]
    return camera, own[(n // len(cameras)) % len(own)]
