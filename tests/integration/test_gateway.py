"""The gateway over real HTTP: the session's shared `framewire service gateway` process
(tests/fixtures/gateway.py), on the embedded broker and a SQLite database; tokens from
`framewire token create`. The fuzzer has a gateway of its own."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx2
import pytest
import sqlalchemy as sa

from framewire.broker.client import EmbeddedBroker
from framewire.broker.reading import read_topic, topic_size
from framewire.capture.ingest import Ingest
from framewire.capture.sources import CapturedImage
from framewire.contracts import Detection, FrameCaptured, FrameHeader, InferenceResult, utcnow
from framewire.contracts.codec import Codec
from framewire.runtime import StopSignal
from framewire.store.blobs import BlobStore
from framewire.store.db import open_database
from framewire.store.tables import result_table
from tests.fixtures.gateway import (
    SHARED_SETTINGS,
    RunningGateway,
    framewire,
    gateway_site,
    running_gateway,
)
from tests.fixtures.images import jpeg, jpeg_claiming_size, synthetic_frame
from tests.fixtures.kafka import wait_until

pytestmark = pytest.mark.integration
API = "/api/v1"
MAX_UPLOAD = SHARED_SETTINGS["max_upload_bytes"]

# every route, and the least role it needs
ROUTES = [
    ("POST", f"{API}/cameras/cam-1/frames", "operator"),
    ("GET", f"{API}/results", "viewer"),
    ("GET", f"{API}/results/stream", "viewer"),
    ("GET", f"{API}/results/F1", "viewer"),
    ("GET", f"{API}/results/F1/frame", "viewer"),
    ("GET", f"{API}/results/F1/thumbnail", "viewer"),
    ("GET", f"{API}/deadletters", "viewer"),
    ("POST", f"{API}/deadletters/replay", "operator"),
    ("GET", f"{API}/traces/F1", "viewer"),
    ("GET", f"{API}/status", "viewer"),
    ("GET", f"{API}/tokens", "admin"),
    ("POST", f"{API}/tokens", "admin"),
    ("DELETE", f"{API}/tokens/abc", "admin"),
    ("GET", f"{API}/events", "viewer"),
    ("GET", f"{API}/events/stream", "viewer"),
    ("GET", f"{API}/alerts", "viewer"),
    ("GET", f"{API}/alerts/stream", "viewer"),
    ("GET", f"{API}/cameras/cam-1/analytics", "viewer"),
    ("PUT", f"{API}/cameras/cam-1/analytics", "operator"),
    ("DELETE", f"{API}/cameras/cam-1/analytics", "operator"),
]
RANK = {"viewer": 1, "operator": 2, "admin": 3}
PUSH_SPAN = f"POST {API}/cameras/{{camera_id}}/frames"


@pytest.fixture
def gateway(shared_gateway: RunningGateway) -> RunningGateway:
    """The session's shared gateway site (tests/fixtures/gateway.py)."""
    return shared_gateway


@pytest.fixture(scope="module")
def own_gateway(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[RunningGateway]:
    """A gateway site of its own, with the shared site's settings: for the fuzzer, whose
    webhooks, cameras and replays would be in other tests' way."""
    site = gateway_site(broker, tmp_path_factory.mktemp("gw-fuzz") / "home", **SHARED_SETTINGS)
    with running_gateway(site) as gw:
        yield gw


def result(frame_id: str, camera: str, captured_at: datetime) -> InferenceResult:
    return InferenceResult(
        header=FrameHeader(frame_id=frame_id, camera_id=camera, seq=0, captured_at=captured_at,
                           ingested_at=captured_at),
        preprocessed_at=captured_at, inferred_at=captured_at, orig_width=640, orig_height=360,
        model_name="centerface", model_version="1", provider="CPUExecutionProvider",
        too_dark=False, blurred=False, frozen=False,
        detections=[Detection(label="face", class_id=0, score=0.9, x1=1, y1=2, x2=30, y2=40)])


def store(gw: RunningGateway, *results: InferenceResult) -> None:
    """Through the storage service's own upsert, into the gateway's database."""
    with open_database(gw.site.settings.resolved_database_url) as db:
        assert db.upsert_results(list(results)) == len(results)


def audit_entries(gw: RunningGateway) -> list[dict]:
    path = gw.site.home / "logs" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the API's shape and who may use it ------------------------------------------------------


def test_openapi_describes_every_route_under_api_v1(gateway: RunningGateway):
    spec = httpx2.get(f"{gateway.url}/openapi.json").json()
    paths = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    wanted = {(m, p.replace("cam-1", "{camera_id}").replace("F1", "{frame_id}")
               .replace("/abc", "/{token_id}")) for m, p, _ in ROUTES}
    assert wanted <= paths
    assert all(p.startswith(API) for _, p in paths)
    push = spec["paths"][f"{API}/cameras/{{camera_id}}/frames"]["post"]
    assert set(push["requestBody"]["content"]) == {"image/jpeg", "image/png"}


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in ROUTES])
def test_every_route_answers_401_without_a_token_or_with_an_unknown_one(
        gateway: RunningGateway, method: str, path: str):
    for client in (gateway.client(), gateway.client(token="fw_00000000_not-a-real-token")):
        with client:
            answer = client.request(method, path)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "framewire token create" in answer.json()["detail"]


@pytest.mark.parametrize(("method", "path", "needs"), [r for r in ROUTES if r[2] != "viewer"])
def test_a_role_below_what_the_route_needs_gets_403(gateway: RunningGateway, method: str,
                                                    path: str, needs: str):
    for role in ("viewer", "operator"):
        if RANK[role] >= RANK[needs]:
            continue
        with gateway.client(role) as client:
            answer = client.request(method, path, content=b"x",
                                    headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 403, (role, answer.text)
        assert f"needs the {needs} role" in answer.json()["detail"]


# -- frames in -------------------------------------------------------------------------------


def test_a_pushed_frame_gets_202_with_its_id_and_reaches_frames_raw_keyed_by_camera(
        gateway: RunningGateway):
    frame = jpeg(synthetic_frame(3))
    with gateway.client("operator") as client:
        answer = client.post(f"{API}/cameras/door-1/frames", content=frame,
                             headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 202, answer.text
    frame_id = answer.json()["frame_id"]
    with gateway.client("admin") as client:  # an admin may do what an operator may
        assert client.post(f"{API}/cameras/door-1/frames", content=frame,
                           headers={"Content-Type": "image/jpeg"}).status_code == 202
    settings, codec = gateway.site.settings, Codec()

    def on_the_topic():
        for msg in read_topic(settings, settings.topic("frames.raw")):
            record = codec.decode(msg.value(), FrameCaptured)
            if record.frame_id == frame_id:
                return msg, record
        return None

    msg, record = wait_until(on_the_topic, 20, f"frame {frame_id} on frames.raw")
    assert msg.key() == b"door-1" and record.camera_id == "door-1"
    assert record.content_type == "image/jpeg" and (record.width, record.height) == (640, 360)
    # its trace starts in the gateway, in the embedded span store
    def both_spans(client: httpx2.Client) -> dict | None:
        # the request's span ends after the answer went out: it may be exported later
        answer = client.get(f"{API}/traces/{frame_id}")
        names = {s["name"] for s in answer.json().get("spans", [])}
        return answer.json() if {"ingest frame", PUSH_SPAN} <= names else None

    with gateway.client("viewer") as client:
        trace = wait_until(lambda: both_spans(client), 20, "the pushed frame's trace")
        assert client.get(f"{API}/traces/NO-SUCH-FRAME").status_code == 404
    assert trace["frame_id"] == frame_id
    names = [(s["service"], s["name"]) for s in trace["spans"]]
    assert names[0] == ("gateway", PUSH_SPAN)  # the trace starts with the request
    assert ("gateway", "ingest frame") in names


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", synthetic_frame(1, width=96, height=72))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (b"camera notes, not a frame\n" * 4, "image/jpeg", 415, "not_an_image"),
    (jpeg(synthetic_frame(1)), "text/plain", 415, "unsupported_type"),
    (_png(), "image/jpeg", 415, "type_mismatch"),
    (jpeg(synthetic_frame(1))[:3000], "image/jpeg", 422, "truncated_image"),
    (b"", "image/png", 422, "empty"),
    (jpeg_claiming_size(60000, 60000), "image/jpeg", 413, "too_many_pixels"),
    (b"\xff\xd8\xff" + bytes(MAX_UPLOAD), "image/jpeg", 413, "too_large"),
], ids=["text", "wrong_type", "png_as_jpeg", "truncated", "empty", "bomb", "too_large"])
def test_a_bad_frame_is_refused_with_4xx_and_the_reason(gateway: RunningGateway,
                                                        body: bytes, content_type: str,
                                                        status: int, code: str):
    with gateway.client("operator") as client:
        answer = client.post(f"{API}/cameras/door-2/frames", content=body,
                             headers={"Content-Type": content_type})
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert len(answer.json()["detail"]) > 20


# -- results ---------------------------------------------------------------------------------


def test_results_are_listed_by_camera_and_time_and_one_by_frame_id(gateway: RunningGateway):
    now = utcnow()
    store(gateway, *(result(f"LIST-{i}", "list-cam", now - timedelta(hours=i))
                     for i in range(3)), result("LIST-OTHER", "list-other", now))
    with gateway.client("viewer") as client:
        listed = client.get(f"{API}/results", params={"camera": "list-cam"}).json()
        assert [r["frame_id"] for r in listed] == ["LIST-0", "LIST-1", "LIST-2"]
        recent = client.get(f"{API}/results", params={"camera": "list-cam", "since": "90m"})
        assert [r["frame_id"] for r in recent.json()] == ["LIST-0", "LIST-1"]
        assert len(client.get(f"{API}/results", params={"limit": 1}).json()) == 1
        for since in ("soon", "99999999999d"):  # not a time; before year 1
            assert client.get(f"{API}/results", params={"since": since}).status_code == 422
        one = client.get(f"{API}/results/LIST-1").json()
        assert client.get(f"{API}/results/NO-SUCH-FRAME").status_code == 404
    assert one["camera_id"] == "list-cam" and one["model_name"] == "centerface"
    assert one["detections"] == [{"label": "face", "class_id": 0, "score": 0.9, "x1": 1.0,
                                  "y1": 2.0, "x2": 30.0, "y2": 40.0}]
    assert datetime.fromisoformat(one["captured_at"]) == (now - timedelta(hours=1))
    assert one["frame_url"] is None and one["thumbnail_url"] is None
    assert "image_uri" not in one


def test_a_results_stored_frame_and_thumbnail_are_served_as_jpeg(gateway: RunningGateway):
    if "frame_uri" not in result_table.c:
        pytest.skip("the results table has no frame_uri column yet")
    frame, thumb = jpeg(synthetic_frame(5)), jpeg(synthetic_frame(5, width=96, height=54))
    blobs = BlobStore.from_settings(gateway.site.settings)
    frame_uri, thumb_uri = blobs.put(frame)[0], blobs.put(thumb)[0]
    store(gateway, result("IMG-1", "img-cam", utcnow()), result("IMG-2", "img-cam", utcnow()))
    with open_database(gateway.site.settings.resolved_database_url) as db, \
            db.engine.begin() as conn:
        conn.execute(sa.update(result_table).where(result_table.c.frame_id == "IMG-1")
                     .values(frame_uri=frame_uri, thumbnail_uri=thumb_uri))
    with gateway.client("viewer") as client:
        one = client.get(f"{API}/results/IMG-1").json()
        assert one["frame_url"] == f"{API}/results/IMG-1/frame"
        assert one["thumbnail_url"] == f"{API}/results/IMG-1/thumbnail"
        assert not {"image_uri", "frame_uri", "thumbnail_uri"} & set(one)  # server paths
        for url, data in ((one["frame_url"], frame), (one["thumbnail_url"], thumb)):
            got = client.get(url)
            assert (got.status_code, got.headers["content-type"]) == (200, "image/jpeg")
            assert got.content == data
        assert client.get(f"{API}/results/IMG-2/frame").status_code == 404
        assert client.get(f"{API}/results/IMG-2").json()["frame_url"] is None
        assert client.get(f"{API}/results/NO-SUCH-FRAME/thumbnail").status_code == 404


def test_the_stream_sends_new_results_of_its_camera_and_resumes_after_last_event_id(
        gateway: RunningGateway):
    def events(client: httpx2.Client, count: int, headers: dict[str, str] | None = None,
               after=None) -> list:
        got = []
        with client.sse(f"{API}/results/stream", params={"camera": "live"},
                        headers=headers) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            if after is not None:
                after()  # stored once the stream is open: these are new results
            for event in source:
                if event.retry is not None and not event.data:
                    continue  # the stream's first block: how long to wait before reconnecting
                got.append(event)
                if len(got) == count:
                    return got
        raise AssertionError(f"the stream ended after {len(got)} of {count} events")

    base = utcnow()
    with gateway.client("viewer") as client:
        first = events(client, 3, after=lambda: store(
            gateway, *(result(f"LIVE-{i}", "live", base) for i in range(3)),
            result("ELSEWHERE-1", "elsewhere", base)))
        assert [e.json()["frame_id"] for e in first] == ["LIVE-0", "LIVE-1", "LIVE-2"]
        assert {e.event for e in first} == {"result"}
        assert len({e.id for e in first}) == 3
        # two more while the client is away; it comes back after the second event it saw
        store(gateway, result("LIVE-3", "live", base), result("LIVE-4", "live", base))
        resumed = events(client, 3, headers={"Last-Event-ID": first[1].id})
        assert [e.json()["frame_id"] for e in resumed] == ["LIVE-2", "LIVE-3", "LIVE-4"]
        assert resumed[0].id == first[2].id
        for bad in ("yesterday", "9" * 30 + "-LIVE-1"):
            answer = client.get(f"{API}/results/stream", headers={"Last-Event-ID": bad})
            assert answer.status_code == 400


# -- dead letters, status --------------------------------------------------------------------


def test_dead_letters_are_listed_and_replayed_by_an_operator_and_the_replay_audited(
        gateway: RunningGateway):
    ingest = Ingest(gateway.site.settings, stop=StopSignal(install=False))
    ingest.offer("dl-cam", CapturedImage(b"lens cleaned on Tuesday\n" * 8, utcnow(), "test"))
    ingest.close()
    with gateway.client("viewer") as viewer:
        letters = wait_until(lambda: [d for d in viewer.get(f"{API}/deadletters").json()
                                      if d["camera_id"] == "dl-cam"], 20, "the dead letter")
    assert letters[0]["code"] == "not_an_image" and letters[0]["service"] == "ingest"
    # a limit reads only the newest of the topic; the dashboard counts them by offsets
    with gateway.client("viewer") as viewer:
        every = viewer.get(f"{API}/deadletters", params={"limit": 10_000}).json()
        assert viewer.get(f"{API}/deadletters", params={"limit": 1}).json() == every[-1:]
    assert topic_size(gateway.site.settings, gateway.site.settings.topic("deadletter")) == len(
        every)
    with gateway.client("operator") as operator:
        dry = operator.post(f"{API}/deadletters/replay",
                            json={"reason": "not_an_image", "dry_run": True}).json()
        assert dry == {"matched": 1, "dry_run": True, "outcome": {}}
        done = operator.post(f"{API}/deadletters/replay", json={"reason": "not_an_image"})
    assert done.status_code == 200, done.text
    assert done.json()["outcome"] == {"rejected again at ingest": 1}
    (entry,) = [e for e in audit_entries(gateway) if e["action"] == "deadletters.replay"]
    assert entry["who"] == "token:" + gateway.tokens["operator"].split("_")[1] + " (operator)"
    assert entry["matched"] == 1 and datetime.fromisoformat(entry["at"]) <= datetime.now(UTC)


def test_status_is_what_framewire_status_json_shows_with_the_gateway_alive(gateway: RunningGateway):
    with gateway.client("viewer") as client:
        shown = wait_until(lambda: (s := client.get(f"{API}/status").json()) and
                           any(e["service"] == "gateway" and e["alive"] for e in s) and s,
                           20, "the gateway alive in status")
    cli = framewire(gateway.site, "status", "--json")
    assert cli.returncode == 0, cli.stderr
    by_cli = {e["service"]: e for e in json.loads(cli.stdout)}
    by_api = {e["service"]: e for e in shown}
    assert list(by_api) == list(by_cli)  # the same services, in the same order
    assert "gateway" in by_api and "broker" in by_api
    assert set(by_api["gateway"]) == set(by_cli["gateway"])
    assert set(by_api["gateway"]["instances"][0]) == set(by_cli["gateway"]["instances"][0])


# -- tokens ----------------------------------------------------------------------------------


def test_token_create_prints_the_token_alone_on_the_last_line_and_keeps_only_its_digest(
        gateway: RunningGateway):
    token = gateway.tokens["admin"]
    shown = gateway.create_output.splitlines()
    assert shown[-1] == token and all(token not in line for line in shown[:-1])
    assert token.startswith("fw_") and len(token) > 40
    kept = gateway.site.home / "tokens.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    text = kept.read_text()
    assert all(t not in text for t in gateway.tokens.values())
    listed = json.loads(framewire(gateway.site, "token", "ls", "--json").stdout)
    assert {t["role"] for t in listed} == {"admin", "operator", "viewer"}


def test_an_admin_creates_and_revokes_tokens_and_each_action_is_audited(gateway: RunningGateway):
    with gateway.client("admin") as admin:
        made = admin.post(f"{API}/tokens", json={"role": "viewer", "name": "kiosk"}).json()
        assert made["role"] == "viewer" and "sha256" not in made
        listed = admin.get(f"{API}/tokens").json()
        assert made["token_id"] in {t["token_id"] for t in listed}
        assert all("sha256" not in t and "token" not in t for t in listed)
        with gateway.client(token=made["token"]) as kiosk:
            assert kiosk.get(f"{API}/results").status_code == 200
            assert admin.delete(f"{API}/tokens/{made['token_id']}").status_code == 204
            assert kiosk.get(f"{API}/results").status_code == 401
        assert admin.delete(f"{API}/tokens/{made['token_id']}").status_code == 404
        assert admin.post(f"{API}/tokens", json={"role": "root"}).status_code == 422
    actions = [(e["action"], e["token_id"], e["who"]) for e in audit_entries(gateway)
               if e.get("token_id") == made["token_id"]]
    who = f"token:{gateway.admin_id} (tests)"
    assert actions == [("token.create", made["token_id"], who),
                       ("token.revoke", made["token_id"], who)]
    # the command line revokes too, and says who in the log
    cli_made = framewire(gateway.site, "token", "create", "--role", "viewer")
    cli_id = cli_made.stdout.splitlines()[-1].split("_")[1]
    assert framewire(gateway.site, "token", "revoke", cli_id).returncode == 0
    assert framewire(gateway.site, "token", "revoke", cli_id).returncode == 1
    assert [e["action"] for e in audit_entries(gateway) if e.get("token_id") == cli_id] == [
        "token.create", "token.revoke"]
    assert Path(gateway.site.home / "logs" / "audit.log").stat().st_mode & 0o077 == 0


# -- fuzzing from the schema -----------------------------------------------------------------


def fuzz(gw: RunningGateway, examples: int, on_slow_routes: int) -> None:
    """schemathesis draws requests for every route (bodies, ids, query values) from
    /openapi.json and sends them with an admin token: bad input is answered 4xx, never 5xx.
    ``examples`` per route, ``on_slow_routes`` on those that read whole topics or replay;
    derandomized, so a run draws the same requests each time."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    headers = {"Authorization": f"Bearer {gw.tokens['admin']}"}
    tried = []
    for found in schema.get_all_operations():
        operation = found.ok()
        if operation.path.endswith("/stream"):
            continue  # never ends by itself; test_the_stream_... covers it
        slow = operation.path.endswith(("/status", "/deadletters", "/replay", "/cameras",
                                        "/cameras/{camera_id}", "/model", "/reprocess",
                                        "/analytics"))

        @settings(max_examples=on_slow_routes if slow else examples, deadline=None,
                  database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def no_server_error(case) -> None:
            answer = case.call(base_url=gw.url, headers=headers, timeout=30)
            assert answer.status_code < 500, (case.method, case.formatted_path,
                                              answer.status_code, answer.text[:300])

        no_server_error()
        tried.append(f"{operation.method.upper()} {operation.path}")
    # every route of ROUTES (less the stream), and those other test modules cover
    assert len(tried) >= len(ROUTES) - 1, tried


def test_requests_generated_from_openapi_never_get_a_server_error(
        own_gateway: RunningGateway):
    """A few requests per route in every run; test_a_long_fuzz_... draws many more."""
    fuzz(own_gateway, examples=3, on_slow_routes=1)


@pytest.mark.slow
def test_a_long_fuzz_from_openapi_never_gets_a_server_error(own_gateway: RunningGateway):
    fuzz(own_gateway, examples=25, on_slow_routes=4)
