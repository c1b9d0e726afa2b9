"""The gateway's /api/v1/cameras over real HTTP, on the session's embedded broker: cameras
added, changed and removed on the cameras topic, audited, and pushed frames taking their
camera's privacy mode from that topic."""

from __future__ import annotations

import json

import pytest

from framewire.broker.reading import read_topic
from framewire.contracts import FrameCaptured
from framewire.contracts.codec import Codec
from framewire.ops.cameras import list_cameras
from tests.fixtures.gateway import (
    API,
    RANK,
    RunningGateway,
    framewire,
)
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import wait_until

pytestmark = pytest.mark.integration
ROUTES = [("GET", f"{API}/cameras", "viewer"), ("POST", f"{API}/cameras", "operator"),
          ("PUT", f"{API}/cameras/cam-x", "operator"),
          ("DELETE", f"{API}/cameras/cam-x", "operator")]


@pytest.fixture
def gateway(shared_gateway: RunningGateway) -> RunningGateway:
    # the shared site's privacy mode is on: a camera's own setting is what turns it off
    assert shared_gateway.site.settings.privacy_mode
    return shared_gateway


def audited(gw: RunningGateway) -> list[dict]:
    path = gw.site.home / "logs" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("method", "path", "needs"), ROUTES)
def test_camera_routes_need_a_token_and_their_role(gateway: RunningGateway, method: str,
                                                   path: str, needs: str):
    with gateway.client() as client:
        assert client.request(method, path, json={}).status_code == 401
    for role in ("viewer", "operator"):
        if RANK[role] < RANK[needs]:
            with gateway.client(role) as client:
                answer = client.request(method, path, json={})
            assert answer.status_code == 403, answer.text
            assert f"needs the {needs} role" in answer.json()["detail"]


def test_a_camera_is_added_changed_listed_and_removed_over_http_and_audited(
        gateway: RunningGateway):
    body = {"camera_id": "door-1", "url": "rtsp://admin:hunter2@10.0.0.7/stream", "fps": 5}
    with gateway.client("operator") as client:
        added = client.post(f"{API}/cameras", json=body)
        assert added.status_code == 201, added.text
        assert added.json() == {"camera_id": "door-1", "url": "rtsp://admin:***@10.0.0.7/stream",
                                "fps": 5.0, "loop": False, "retention": None,
                                "privacy_mode": None, "origin": "topic"}
        again = client.post(f"{API}/cameras", json={**body, "retention": "2d"})
        assert again.status_code == 200 and again.json()["retention"] == "2d"
        changed = client.put(f"{API}/cameras/door-1", json={"url": "/srv/door", "loop": True})
        assert changed.status_code == 200, changed.text
        assert changed.json()["url"] == "/srv/door" and changed.json()["retention"] is None
    with gateway.client("viewer") as client:
        listed = client.get(f"{API}/cameras")
    assert listed.status_code == 200
    assert [c for c in listed.json() if c["camera_id"] == "door-1"] == [changed.json()]
    # what `framewire cameras ls --json` shows (one function makes both)
    assert changed.json() in [c.as_json() for c in list_cameras(gateway.site.settings)]
    with gateway.client("operator") as client:
        assert client.delete(f"{API}/cameras/door-1").status_code == 204
        gone = client.delete(f"{API}/cameras/door-1")
        assert gone.status_code == 404 and "no camera 'door-1'" in gone.json()["detail"]
        missing = client.put(f"{API}/cameras/door-1", json={"url": "/srv/door"})
        assert missing.status_code == 404
    assert "door-1" not in {c.settings.camera_id for c in list_cameras(gateway.site.settings)}
    entries = [e for e in audited(gateway) if e.get("camera_id") == "door-1"]
    assert [e["action"] for e in entries] == ["camera.add", "camera.change", "camera.change",
                                              "camera.remove"]
    assert all(e["who"].startswith("token:") for e in entries)
    assert "hunter2" not in (gateway.site.home / "logs" / "audit.log").read_text()


@pytest.mark.parametrize(("path", "body", "method", "wanted"), [
    ("/cameras", {"camera_id": "bad id!", "url": "/srv/x"}, "POST", "camera_id"),
    ("/cameras", {"camera_id": "c1", "url": "ftp://u:s3cret@host/x"}, "POST", "unknown scheme"),
    ("/cameras", {"camera_id": "c1", "url": "/srv/x", "fps": 0}, "POST", "fps"),
    ("/cameras", {"camera_id": "c1"}, "POST", "url"),
    ("/cameras/c1", {"camera_id": "c2", "url": "/srv/x"}, "PUT", "to rename"),
], ids=["bad_id", "bad_scheme", "bad_fps", "no_url", "renamed"])
def test_a_bad_camera_is_refused_with_422_and_what_to_fix(gateway: RunningGateway, path: str,
                                                          body: dict, method: str, wanted: str):
    with gateway.client("operator") as client:
        answer = client.request(method, f"{API}{path}", json=body)
    assert answer.status_code == 422, answer.text
    assert wanted in answer.json()["detail"] and "s3cret" not in answer.text


def test_pushed_frames_take_their_cameras_privacy_mode_from_the_cameras_topic(
        gateway: RunningGateway):
    settings, codec = gateway.site.settings, Codec()
    added = framewire(gateway.site, "cameras", "add", "open-1", "--url", "/srv/open",
                      "--no-privacy-mode")
    assert added.returncode == 0, added.stderr
    frame = jpeg(synthetic_frame(2))

    def push(camera: str) -> str:
        with gateway.client("operator") as client:
            answer = client.post(f"{API}/cameras/{camera}/frames", content=frame,
                                 headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 202, answer.text
        return answer.json()["frame_id"]

    def privacy_of(frame_ids: set[str]) -> dict[str, bool]:
        found = {}
        for msg in read_topic(settings, settings.topic("frames.raw")):
            record = codec.decode(msg.value(), FrameCaptured)
            if record.frame_id in frame_ids:
                found[record.frame_id] = record.privacy
        return found

    # the gateway follows the topic: a frame pushed once it has read the change is not private
    pushed: set[str] = set()

    def out_of_privacy_mode() -> bool:
        pushed.add(push("open-1"))
        return False in privacy_of(pushed).values()

    wait_until(out_of_privacy_mode, 20, "a frame of open-1 out of privacy mode")
    # a camera the topic does not name keeps the site's privacy mode; one added over HTTP is
    # answered once the gateway follows it, so the next push takes its setting at once
    with gateway.client("operator") as client:
        assert client.post(f"{API}/cameras", json={"camera_id": "open-2", "url": "/srv/o2",
                                                   "privacy_mode": False}).status_code == 201
    other, second = push("unlisted-1"), push("open-2")
    found = wait_until(lambda: (f := privacy_of({other, second})) and len(f) == 2 and f, 20,
                       "both frames on frames.raw")
    assert found == {other: True, second: False}
    # and the same order back: into privacy mode
    with gateway.client("operator") as client:
        assert client.put(f"{API}/cameras/open-2", json={"url": "/srv/o2",
                                                         "privacy_mode": True}).status_code == 200
    third = push("open-2")
    assert wait_until(lambda: privacy_of({third}), 20, "the frame on frames.raw") == {
        third: True}
