"""The analytics service on real brokers: synthetic detections on known paths published to
``detections`` give the exact events on ``events`` (embedded broker); on Apache Kafka, two
workers, one killed with -9 in the middle of a window, give the window counts of a run
without the kill."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from framewire.analytics.records import AnalyticsEvent
from framewire.analytics.service import CameraWork
from framewire.broker.client import client_config
from framewire.config import Settings
from framewire.contracts import InferenceResult
from framewire.contracts.codec import Codec
from framewire.ops.status import heartbeats
from framewire.runtime import Publisher
from tests.fixtures.kafka import QUICK_FAILOVER, Site, wait_until
from tests.unit.test_analytics_agent import CAMERA, results

pytestmark = pytest.mark.integration

ANALYTICS = {"tumbling_s": 10, "hopping_s": 20, "hop_s": 10, "lost_after_s": 1}
CAMERAS = ["door-1", "door-2", "door-3", "door-4"]
WindowKey = tuple[str, str, str, str, str | None, str]


def configure(site: Site, cameras: list[str], delivery: str = "at_least_once") -> Settings:
    site.env["FRAMEWIRE_DELIVERY"] = delivery
    site.env["FRAMEWIRE_ANALYTICS"] = json.dumps(
        {**ANALYTICS, "cameras": {c: CAMERA for c in cameras}})
    site.env["FRAMEWIRE_KAFKA"] = json.dumps(QUICK_FAILOVER)
    return site.settings


def publish(settings: Settings, frames: list[InferenceResult]) -> None:
    publisher = Publisher(settings, "test")
    for result in frames:
        publisher.publish("detections", result, key=result.header.camera_id)
    publisher.flush()


def read_events(settings: Settings, seen: list[AnalyticsEvent], consumer: Consumer) -> None:
    codec = Codec()
    while (message := consumer.poll(0.2)) is not None:
        if message.error() is None:
            seen.append(codec.decode(message.value(), AnalyticsEvent))


def events_consumer(settings: Settings) -> Consumer:
    consumer = Consumer(client_config(settings, **{
        "group.id": "test-analytics-reader", "enable.auto.commit": False,
        "isolation.level": "read_committed"}))
    topic = settings.topic("events")
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    return consumer


def window_counts(events: list[AnalyticsEvent]) -> dict[WindowKey, int]:
    """Each window's count; a window sent twice (a redelivery) must say the same both times."""
    counts: dict[WindowKey, int] = {}
    for e in events:
        if e.type != "window_count" or e.window is None:
            continue
        w = e.window
        key = (e.camera_id, w.kind, e.name, w.counted, w.direction, w.start.isoformat())
        assert counts.get(key, w.count) == w.count, f"window {key} sent with two counts"
        counts[key] = w.count
    return counts


def expected(settings: Settings, frames: list[InferenceResult]) -> list[AnalyticsEvent]:
    """The events of a run without Kafka and without a kill: the service's core, in order."""
    codec, work = Codec(), CameraWork(settings.analytics, Codec())
    out = []
    for result in frames:
        done = work.handle(result, work.export(result.header.camera_id)
                           if result.header.camera_id in work.cameras else None)
        out += [codec.decode(o.value, AnalyticsEvent) for o in done.outgoing
                if o.topic == "events"]
    return out


def test_synthetic_walkers_give_exact_events_on_the_embedded_broker(site: Site):
    settings = configure(site, ["door-1"])
    frames = results("door-1", duration_s=23.0)
    publish(settings, frames)
    site.start("analytics")
    consumer = events_consumer(settings)
    seen: list[AnalyticsEvent] = []
    want = expected(settings, frames)
    try:
        wait_until(lambda: (read_events(settings, seen, consumer) or
                            len({e.event_id for e in seen}) >= len(want)) or
                   not site.alive("analytics") and pytest.fail(site.logs()),
                   90, "the events of every frame on the events topic")
    finally:
        consumer.close()
    by_type = Counter((e.type, e.name, e.direction) for e in {e.event_id: e for e in seen}
                      .values() if e.type != "window_count")
    assert by_type == {("line_cross", "door", "in"): 1, ("line_cross", "door", "out"): 1,
                       ("zone_enter", "bay", None): 1, ("zone_leave", "bay", None): 1}
    assert window_counts(seen) == window_counts(want)
    assert window_counts(seen)[("door-1", "tumbling", "door", "line_cross", "in",
                                frames[0].header.captured_at.isoformat())] == 1
    assert {e.event_id for e in seen} == {e.event_id for e in want}
    # framewire status sees the worker: its heartbeats count every record in and every event out
    beat = wait_until(lambda: next((b for b in heartbeats(settings, Codec()) if
                                    b.service == "analytics" and b.records_in >= len(frames)),
                                   None), 30, "an analytics heartbeat counting every frame")
    assert beat.records_out >= len(want) and beat.group == settings.group("analytics")


# exactly_once: faust's transactions, the outputs and the state in their input partition's,
# with framewire.analytics.transactions' fixes (docs/analytics.md, "Delivery"); about 45 s,
# so with -m slow. It passed 14 runs of 15; the failing one timed out waiting for the window
# counts, cause not known


@pytest.mark.parametrize("delivery", ["at_least_once", pytest.param(
    "exactly_once", marks=pytest.mark.slow)])
def test_killed_worker_mid_window_gives_the_counts_of_a_run_without_the_kill(
        kafka_site: Site, delivery: str):
    settings = configure(kafka_site, CAMERAS, delivery)
    frames = {c: results(c, duration_s=23.0) for c in CAMERAS}
    # frames in capture order, cameras interleaved, as cameras send them
    ordered = [frames[c][i] for i in range(len(frames[CAMERAS[0]])) for c in CAMERAS]
    half = len(ordered) // 3  # the first 5.7 s: every camera in its first tumbling window
    kafka_site.start("analytics", "analytics")
    publish(settings, ordered[:half])
    consumer = events_consumer(settings)
    seen: list[AnalyticsEvent] = []
    try:
        wait_until(lambda: (read_events(settings, seen, consumer) or
                            sum(e.type == "line_cross" for e in seen) >= len(CAMERAS)),
                   90, "line crossings of every camera before the kill")
        victim = kafka_site.procs["analytics"][0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        publish(settings, ordered[half:])
        want = window_counts(expected(settings, ordered))
        wait_until(lambda: (read_events(settings, seen, consumer) or
                            set(window_counts(seen)) >= set(want)),
                   120, "every window's count after the failover")
    finally:
        consumer.close()
    got = window_counts(seen)
    tumbling = {k: n for k, n in got.items() if k[1] == "tumbling"}
    # the counts of this run, for the record (pytest -s shows them)
    print(f"\n[analytics failover, {delivery}] {len(CAMERAS)} cameras, {len(ordered)} frames, "
          f"worker 1 of 2 killed after frame {half}: {len(got)} windows, {len(want)} expected; "
          f"tumbling counts {sorted(tumbling.values())} (sum {sum(tumbling.values())}, "
          f"expected {sum(n for k, n in want.items() if k[1] == 'tumbling')}); events seen "
          f"{len(seen)}, distinct {len({e.event_id for e in seen})}")
    assert got == want
    if delivery == "exactly_once":  # what the killed worker left open was aborted, not seen
        assert len(seen) == len({e.event_id for e in seen}), "an event seen twice"
    assert kafka_site.procs["analytics"][1].poll() is None
