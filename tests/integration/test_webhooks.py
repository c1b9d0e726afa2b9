"""Webhooks against a real HTTP receiver (http.server in a thread): results stored in the
gateway's database are POSTed, signed, to the subscriptions of their camera; a receiver that
fails is retried with backoff, and one that keeps failing is given up and shows in status."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from framewire.contracts import Detection, FrameHeader, InferenceResult, utcnow
from framewire.store.db import open_database
from tests.fixtures.gateway import API, SHARED_SETTINGS, RunningGateway
from tests.fixtures.kafka import wait_until

pytestmark = pytest.mark.integration
ATTEMPTS = SHARED_SETTINGS["gateway__webhook_attempts"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers 200 on /ok/*, 503 to the first two POSTs of each /flaky/* path, 500 on
    /down/*; keeps every request it got."""

    url: str
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.got if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.got.append(Received(self.path, dict(self.headers), body))
                tries = sum(1 for r in state.got if r.path == self.path)
            if self.path.startswith("/down/"):
                code = 500
            elif self.path.startswith("/flaky/"):
                code = 503 if tries <= 2 else 200
            else:
                code = 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def gateway(shared_gateway: RunningGateway) -> RunningGateway:
    """The shared site: its gateway gives a webhook ATTEMPTS tries, 100 ms apart at first."""
    return shared_gateway


def store(gw: RunningGateway, frame_id: str, camera: str) -> None:
    """A result, through the storage service's own upsert, into the gateway's database."""
    now = utcnow()
    result = InferenceResult(
        header=FrameHeader(frame_id=frame_id, camera_id=camera, seq=0, captured_at=now,
                           ingested_at=now),
        preprocessed_at=now, inferred_at=now, orig_width=640, orig_height=360,
        model_name="centerface", model_version="1", provider="CPUExecutionProvider",
        too_dark=False, blurred=False, frozen=False,
        detections=[Detection(label="face", class_id=0, score=0.9, x1=1, y1=2, x2=30, y2=40)])
    with open_database(gw.site.settings.resolved_database_url) as db:
        assert db.upsert_results([result]) == 1


def subscribe(gw: RunningGateway, **body: object) -> dict:
    with gw.client("admin") as client:
        answer = client.post(f"{API}/webhooks", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def webhook(gw: RunningGateway, webhook_id: str) -> dict:
    with gw.client("admin") as client:
        listed = client.get(f"{API}/webhooks").json()
    return next(h for h in listed if h["webhook_id"] == webhook_id)


def test_webhook_routes_need_an_admin_token(gateway: RunningGateway):
    for method, path in (("GET", "/webhooks"), ("POST", "/webhooks"),
                         ("DELETE", "/webhooks/abc")):
        with gateway.client() as client:
            assert client.request(method, f"{API}{path}", json={}).status_code == 401
        with gateway.client("operator") as client:
            answer = client.request(method, f"{API}{path}", json={})
        assert answer.status_code == 403 and "needs the admin role" in answer.json()["detail"]
    with gateway.client("admin") as client:
        for bad in ({"url": "ftp://host/x"}, {"url": "/relative"},
                    {"url": "http://127.0.0.1/x", "camera": "bad id!"},
                    {"url": "http://127.0.0.1/x", "secret": "short"}):
            assert client.post(f"{API}/webhooks", json=bad).status_code == 422, bad
        assert client.delete(f"{API}/webhooks/nosuchid").status_code == 404


def test_a_result_is_posted_signed_to_the_subscriptions_of_its_camera(
        gateway: RunningGateway, receiver: Receiver):
    own = subscribe(gateway, url=f"{receiver.url}/ok/door", camera="door-1")
    every = subscribe(gateway, url=f"{receiver.url}/ok/all", secret="a-secret-of-our-own")
    assert len(own["secret"]) >= 32 and "secret" not in every  # generated: returned once
    assert own["camera"] == "door-1" and every["camera"] is None
    with gateway.client("admin") as client:
        listed = client.get(f"{API}/webhooks")
    assert "secret" not in listed.text and own["secret"] not in listed.text
    kept = gateway.site.home / "webhooks.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    store(gateway, "HOOK-DOOR", "door-1")
    store(gateway, "HOOK-YARD", "yard-1")
    wait_until(lambda: len(receiver.at("/ok/all")) == 2, 20, "both results at /ok/all")
    door = receiver.at("/ok/door")
    assert [json.loads(r.body)["frame_id"] for r in door] == ["HOOK-DOOR"]
    assert sorted(json.loads(r.body)["frame_id"] for r in receiver.at("/ok/all")) == [
        "HOOK-DOOR", "HOOK-YARD"]
    got = door[0]
    # the signature a receiver checks: HMAC-SHA256 of the raw body with the secret
    digest = hmac.new(own["secret"].encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Framewire-Signature"] == f"sha256={digest}"
    assert got.headers["X-Framewire-Event"] == "result"
    assert got.headers["X-Framewire-Delivery"]
    assert got.headers["Content-Type"] == "application/json"
    with gateway.client("viewer") as client:
        assert json.loads(got.body) == client.get(f"{API}/results/HOOK-DOOR").json()
    assert webhook(gateway, own["webhook_id"])["delivery"] | {"last_attempt_at": None,
                                                              "last_delivered_at": None} == {
        "delivered": 1, "failed_attempts": 0, "given_up": 0, "dropped": 0, "last_status": 200,
        "last_error": None, "last_attempt_at": None, "last_delivered_at": None, "pending": 0}
    with gateway.client("admin") as client:
        for hook in (own, every):
            assert client.delete(f"{API}/webhooks/{hook['webhook_id']}").status_code == 204
        listed_ids = {h["webhook_id"] for h in client.get(f"{API}/webhooks").json()}
    ours = {own["webhook_id"], every["webhook_id"]}
    assert not listed_ids & ours
    # the shared site's log has other tests' webhooks too: these two, each made and removed
    actions = [(e["action"], e["webhook_id"]) for line in
               (gateway.site.home / "logs" / "audit.log").read_text().splitlines()
               if (e := json.loads(line)).get("webhook_id") in ours]
    assert sorted(actions) == sorted((action, hook) for hook in ours
                                     for action in ("webhook.create", "webhook.delete"))


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
        gateway: RunningGateway, receiver: Receiver):
    hook = subscribe(gateway, url=f"{receiver.url}/flaky/gate", camera="gate-1")
    store(gateway, "HOOK-GATE", "gate-1")
    wait_until(lambda: webhook(gateway, hook["webhook_id"])["delivery"]["delivered"] == 1, 20,
               "the delivery to succeed on its third attempt")
    tries = receiver.at("/flaky/gate")
    assert len(tries) == 3  # two 503s, then 200
    assert len({t.headers["X-Framewire-Delivery"] for t in tries}) == 1  # one delivery
    assert len({t.body for t in tries}) == 1
    delivery = webhook(gateway, hook["webhook_id"])["delivery"]
    assert (delivery["failed_attempts"], delivery["given_up"], delivery["last_status"],
            delivery["last_error"]) == (2, 0, 200, None)


def test_a_receiver_that_keeps_failing_is_given_up_and_shown_in_status(
        gateway: RunningGateway, receiver: Receiver):
    port = receiver.url.rsplit(":", 1)[1]
    hook = subscribe(gateway, url=f"http://hook:s3cret@127.0.0.1:{port}/down/dock",
                     camera="dock-1")
    assert hook["url"] == f"http://hook:***@127.0.0.1:{port}/down/dock"
    store(gateway, "HOOK-DOCK", "dock-1")
    wait_until(lambda: webhook(gateway, hook["webhook_id"])["delivery"]["given_up"] == 1, 20,
               "the delivery to be given up")
    tries = receiver.at("/down/dock")
    assert len(tries) == ATTEMPTS
    # the URL's credentials go as basic auth, never in the URL
    assert tries[0].headers["Authorization"] == "Basic " + base64.b64encode(
        b"hook:s3cret").decode()
    delivery = webhook(gateway, hook["webhook_id"])["delivery"]
    assert delivery["last_status"] == 500 and "HTTP 500" in delivery["last_error"]
    fault = (f"webhook {hook['webhook_id']} to http://hook:***@127.0.0.1:{port}/down/dock: "
             f"HTTP 500 Internal Server Error, {ATTEMPTS} attempts")

    def gateway_status() -> dict | None:
        with gateway.client("viewer") as client:
            answer = client.get(f"{API}/status")
        assert "s3cret" not in answer.text
        (gw,) = [s for s in answer.json() if s.get("service") == "gateway"]
        instances = gw["instances"]
        return gw if instances and fault in instances[0]["faults"] and instances[0][
            "drop_reasons"].get("webhook_given_up") == 1 else None

    shown = wait_until(gateway_status, 20, "the failing webhook in the gateway's status")
    assert any(fault in problem for problem in shown["problems"])
    assert "s3cret" not in (gateway.site.home / "logs" / "audit.log").read_text()
