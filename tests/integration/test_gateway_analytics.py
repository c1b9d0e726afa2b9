"""The analytics through the gateway over real HTTP: stored events and alerts listed with
filters, their live streams resumed after Last-Event-ID, an alert POSTed signed to a webhook
receiver, and a camera's lines, zones and alert rules set and read back through the control
topic."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from framewire.analytics.records import Alert, AnalyticsEvent, WindowCount
from framewire.store.analytics import store_alerts, store_events
from framewire.store.db import open_database
from tests.fixtures.gateway import API, RunningGateway
from tests.fixtures.kafka import wait_until
from tests.integration.test_webhooks import Receiver

# the webhook tests' receiver (200 on /ok/*), as a fixture of this module
from tests.integration.test_webhooks import receiver as webhook_receiver  # noqa: F401

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
SETTINGS = {"lines": [{"name": "door", "points": [[640, 0], [640, 720]]}],
            "zones": [{"name": "bay", "points": [[0, 400], [600, 400], [600, 720], [0, 720]]}],
            "alerts": [{"when": "zone_count", "zone": "bay", "above": 5, "for_s": 10}]}


@pytest.fixture
def gateway(shared_gateway: RunningGateway) -> RunningGateway:
    return shared_gateway


def event(event_id: str, camera: str, type_: str, second: int, **fields: object
          ) -> AnalyticsEvent:
    return AnalyticsEvent(event_id=event_id, camera_id=camera, type=type_,
                          name=str(fields.pop("name", "door")),
                          at=T0 + timedelta(seconds=second), emitted_at=T0 + timedelta(
                              seconds=second), frame_id=f"fr-{second}",
                          **fields)  # type: ignore[arg-type]


def alert(alert_id: str, camera: str, state: str, second: int) -> Alert:
    return Alert(alert_id=alert_id, camera_id=camera, rule="zone_count:bay:5",
                 when="zone_count", zone="bay", above=5, for_s=10.0, state=state,
                 started_at=T0, at=T0 + timedelta(seconds=second),
                 emitted_at=T0 + timedelta(seconds=second), frame_id=f"fr-{second}",
                 value=6 if state == "firing" else 3, peak=6)


def store(gw: RunningGateway, events: list[AnalyticsEvent] = (),  # type: ignore[assignment]
          alerts: list[Alert] = ()) -> None:  # type: ignore[assignment]
    """Through the storage stages' own upserts, into the gateway's database."""
    with open_database(gw.site.settings.resolved_database_url) as db:
        assert store_events(db, events) == len(events)
        assert store_alerts(db, alerts) == len(alerts)


def sse(client: httpx2.Client, path: str, count: int, params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None, after: Callable[[], None] | None = None
        ) -> list:
    got = []
    with client.sse(path, params=params, headers=headers) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        if after is not None:
            after()  # stored once the stream is open: new rows
        for message in source:
            if message.retry is not None and not message.data:
                continue
            got.append(message)
            if len(got) == count:
                return got
    raise AssertionError(f"the stream ended after {len(got)} of {count} events")


def test_events_and_alerts_are_listed_by_camera_type_state_and_time(gateway: RunningGateway):
    store(gateway, [event("L-1", "lobby-1", "line_cross", 1, track_id=1, direction="in"),
                    event("L-2", "lobby-1", "zone_enter", 2, name="bay", track_id=1),
                    event("L-3", "lobby-2", "line_cross", 3, track_id=4, direction="out"),
                    AnalyticsEvent(event_id="L-W", camera_id="lobby-1", type="window_count",
                                   name="door", at=T0 + timedelta(seconds=60),
                                   emitted_at=T0 + timedelta(seconds=62),
                                   window=WindowCount("tumbling", T0, T0 + timedelta(
                                       seconds=60), "line_cross", 1, "in"))],
          [alert("A-L", "lobby-1", "firing", 20), alert("A-L", "lobby-1", "resolved", 40)])
    with gateway.client("viewer") as client:
        listed = client.get(f"{API}/events", params={"camera": "lobby-1"}).json()
        assert [e["event_id"] for e in listed] == ["L-W", "L-2", "L-1"]
        assert listed[0]["window"]["count"] == 1 and listed[0]["window"]["direction"] == "in"
        crossings = client.get(f"{API}/events", params={"type": "line_cross",
                                                          "since": T0.isoformat()}).json()
        assert {e["event_id"] for e in crossings} >= {"L-1", "L-3"}
        assert {e["type"] for e in crossings} == {"line_cross"}
        assert [e["event_id"] for e in client.get(f"{API}/events", params={
            "camera": "lobby-1", "limit": 1}).json()] == ["L-W"]
        assert client.get(f"{API}/events", params={"type": "crossing"}).status_code == 422
        assert client.get(f"{API}/events", params={"since": "soon"}).status_code == 422
        alerts = client.get(f"{API}/alerts", params={"camera": "lobby-1"}).json()
        assert [(a["alert_id"], a["state"]) for a in alerts] == [("A-L", "resolved"),
                                                                 ("A-L", "firing")]
        firing = client.get(f"{API}/alerts", params={"camera": "lobby-1",
                                                      "state": "firing"}).json()
        assert [a["value"] for a in firing] == [6]
    with gateway.client() as client:
        assert client.get(f"{API}/events").status_code == 401


def test_the_event_and_alert_streams_send_new_rows_and_resume_after_last_event_id(
        gateway: RunningGateway):
    def new_events() -> None:
        store(gateway, [event(f"S-{i}", "live-1", "line_cross", 100 + i, track_id=i,
                              direction="in") for i in range(3)]
              + [event("S-other", "live-2", "line_cross", 104, direction="in")])

    with gateway.client("viewer") as client:
        first = sse(client, f"{API}/events/stream", 3, params={"camera": "live-1"},
                    after=new_events)
        assert [m.json()["event_id"] for m in first] == ["S-0", "S-1", "S-2"]
        assert {m.event for m in first} == {"analytics_event"}
        store(gateway, [event("S-3", "live-1", "zone_enter", 110, name="bay")])
        resumed = sse(client, f"{API}/events/stream", 2, params={"camera": "live-1"},
                      headers={"Last-Event-ID": first[1].id})
        assert [m.json()["event_id"] for m in resumed] == ["S-2", "S-3"]
        only = sse(client, f"{API}/events/stream", 1, params={"type": "zone_enter"},
                   headers={"Last-Event-ID": first[0].id})
        assert [m.json()["event_id"] for m in only] == ["S-3"]

        alerts = sse(client, f"{API}/alerts/stream", 1, params={"camera": "live-1"},
                     after=lambda: store(gateway, alerts=[alert("A-S", "live-1", "firing", 120)]))
        assert alerts[0].event == "alert" and alerts[0].json()["state"] == "firing"
        store(gateway, alerts=[alert("A-S", "live-1", "resolved", 130)])
        again = sse(client, f"{API}/alerts/stream", 1, params={"camera": "live-1"},
                    headers={"Last-Event-ID": alerts[0].id})
        assert [(m.json()["alert_id"], m.json()["state"]) for m in again] == [
            ("A-S", "resolved")]
        for path in ("/events/stream", "/alerts/stream"):
            answer = client.get(f"{API}{path}", headers={"Last-Event-ID": "yesterday"})
            assert answer.status_code == 400


def test_an_alert_is_posted_signed_to_a_webhook_that_takes_alerts(
        gateway: RunningGateway, webhook_receiver: Receiver):  # noqa: F811 (the fixture)
    receiver = webhook_receiver
    secret = "an-alert-secret-of-our-own"
    with gateway.client("admin") as client:
        made = client.post(f"{API}/webhooks", json={"url": f"{receiver.url}/ok/alerts",
                                                    "camera": "bay-1", "events": ["alert"],
                                                    "secret": secret})
        assert made.status_code == 201, made.text
        assert made.json()["events"] == ["alert"]
        assert client.post(f"{API}/webhooks", json={"url": f"{receiver.url}/x",
                                                    "events": ["frame"]}).status_code == 422
    # a result-only subscription's default: results; this one takes alerts alone
    store(gateway, [event("W-1", "bay-1", "zone_enter", 200, name="bay")],
          [alert("A-W", "bay-1", "firing", 201), alert("A-X", "elsewhere", "firing", 202)])
    wait_until(lambda: receiver.at("/ok/alerts"), 20, "the alert at the receiver")
    (got,) = receiver.at("/ok/alerts")
    headers, body = got.headers, got.body
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Framewire-Signature"] == f"sha256={digest}"
    assert headers["X-Framewire-Event"] == "alert"
    with gateway.client("viewer") as client:
        assert json.loads(body) == client.get(f"{API}/alerts",
                                              params={"camera": "bay-1"}).json()[0]
    with gateway.client("admin") as client:
        client.delete(f"{API}/webhooks/{made.json()['webhook_id']}")


def test_a_cameras_analytics_settings_round_trip_through_the_camera_api(
        gateway: RunningGateway):
    path = f"{API}/cameras/door-7/analytics"
    with gateway.client("viewer") as client:
        assert client.get(path).json() == {"camera_id": "door-7", "origin": "none",
                                           "lines": [], "zones": [], "alerts": [],
                                           "labels": []}
        assert client.put(path, json=SETTINGS).status_code == 403
    with gateway.client("operator") as client:
        put = client.put(path, json=SETTINGS)
        assert put.status_code == 200, put.text
        shown = client.get(path).json()
        assert shown["origin"] == "topic"
        assert shown["lines"] == SETTINGS["lines"] and shown["zones"][0]["points"] == \
            SETTINGS["zones"][0]["points"]
        assert shown["alerts"][0] | {"name": None} == {**SETTINGS["alerts"][0], "name": None}
        bad = client.put(path, json={**SETTINGS, "alerts": [
            {"when": "zone_count", "zone": "dock", "above": 1}]})
        assert bad.status_code == 422 and "add the zone or fix the name" in bad.text
        assert client.get(path).json()["origin"] == "topic"  # the bad one wrote nothing
        assert client.delete(path).status_code == 204
        assert client.get(path).json()["origin"] == "none"
    actions = [json.loads(line)["action"] for line in
               (gateway.site.home / "logs" / "audit.log").read_text().splitlines()]
    assert "camera.analytics" in actions and "camera.analytics.reset" in actions


def test_the_cameras_page_has_each_cameras_analytics_and_their_script(gateway: RunningGateway):
    from framewire.contracts import FrameHeader, InferenceResult, utcnow
    from framewire.gateway.auth import COOKIE

    now = utcnow()
    with open_database(gateway.site.settings.resolved_database_url) as db:
        db.upsert_results([InferenceResult(
            header=FrameHeader(frame_id="PAGE-1", camera_id="page-1", seq=0, captured_at=now,
                               ingested_at=now), preprocessed_at=now, inferred_at=now,
            orig_width=1280, orig_height=720, model_name="centerface", model_version="1",
            provider="CPUExecutionProvider", too_dark=False, blurred=False, frozen=False,
            detections=[])])
    with httpx2.Client(base_url=gateway.url, timeout=30,
                       cookies={COOKIE: gateway.tokens["viewer"]}) as client:
        page = client.get("/cameras")
        assert page.status_code == 200, page.text
        assert 'data-camera="page-1"' in page.text and 'class="analytics"' in page.text
        assert '<script src="/static/analytics.js" defer></script>' in page.text
        script = client.get("/static/analytics.js")
        assert script.status_code == 200 and "/events/stream?type=window_count" in script.text
