"""The Python SDK (framewire.client) against a real gateway and pipeline: the session's
shared gateway site (tests/fixtures/gateway.py) with one `framewire service` process each of
preprocess, inference and storage for the module, on the session's embedded broker; frames
published with the SDK, read back over HTTP and Kafka."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import httpx2
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from skimage import data as skdata

from framewire.client import (
    Camera,
    Client,
    DeadLetterReport,
    DetectionsConsumer,
    Forbidden,
    FramewireAPIError,
    InferenceResult,
    NotFound,
    Result,
    ResultStream,
    Unauthorized,
    Unreachable,
    decode_result,
)
from tests.fixtures.common import free_port
from tests.fixtures.gateway import RunningGateway
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration
STAGES = ("preprocess", "inference", "storage")  # behind the shared gateway
QUICK_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}  # docs/subscribe.md


@dataclass
class Pipeline:
    site: Site
    url: str
    tokens: dict[str, str]  # role -> token
    camera: str  # sdk-cam-…, of this fixture's run alone
    published: list[str]  # frame ids of the camera's frames, in publishing order
    group: str  # the reader's group, sdk-reader-…
    reader: DetectionsConsumer  # made before the frames are published: it joins meanwhile

    def client(self, role: str) -> Client:
        return Client(f"{self.url}/api/v1", self.tokens[role])


def astronaut() -> bytes:
    return jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def pipeline(shared_gateway: RunningGateway) -> Iterator[Pipeline]:
    """The shared gateway site with the pipeline behind it for this module (stopped after
    it: no result of theirs reaches other modules' tests); two frames of a camera of its own
    published with the SDK (a JPEG as bytes, a PNG from a file) and stored."""
    site, url = shared_gateway.site, shared_gateway.url
    run = uuid.uuid4().hex[:6]  # pytest may set the module up again on the same site
    camera, group = f"sdk-cam-{run}", f"sdk-reader-{run}"
    site.start(*STAGES)
    started = [site.procs[s][-1] for s in STAGES]
    reader = DetectionsConsumer(site.settings.bootstrap_servers, group,
                                topic_prefix=site.prefix, **QUICK_GROUP)
    try:
        def answers() -> bool:
            assert site.alive("gateway") and all(p.poll() is None for p in started), \
                site.logs()
            return httpx2.get(f"{url}/openapi.json", timeout=2).status_code == 200

        wait_until(answers, 60, "the gateway to answer", ignoring=(httpx2.TransportError,))
        png = site.home / "frame.png"
        png.write_bytes(cv2.imencode(".png", synthetic_frame(1))[1].tobytes())
        with Client(url, shared_gateway.tokens["operator"]) as fw:
            published = [fw.publish(camera, astronaut()), fw.publish(camera, png)]
            for frame_id in published:
                wait_until(lambda f=frame_id: fw.result(f), 60, f"the result of {frame_id}",
                           ignoring=(NotFound,))
        yield Pipeline(site, url, shared_gateway.tokens, camera, published, group, reader)
    except BaseException:
        print(site.logs())
        raise
    finally:
        reader.close()
        site.stop(*STAGES)
    assert [p.returncode for p in started] == [0] * len(STAGES), site.logs()


def take(stream: ResultStream, count: int, timeout_s: float = 30) -> list[Result]:
    """The stream's next ``count`` results; fails after ``timeout_s`` (the stream closed)."""
    got: queue.Queue[Result | BaseException] = queue.Queue()

    def read() -> None:
        try:
            for _ in range(count):
                got.put(next(stream))
        except BaseException as exc:  # handed to the test's thread
            got.put(exc)

    threading.Thread(target=read, daemon=True).start()
    results = []
    for _ in range(count):
        try:
            item = got.get(timeout=timeout_s)
        except queue.Empty:
            stream.close()
            raise AssertionError(f"the stream gave {len(results)} of {count} results in "
                                 f"{timeout_s} s") from None
        if isinstance(item, BaseException):
            raise item
        results.append(item)
    return results


# -- HTTP ------------------------------------------------------------------------------------


def test_a_published_frame_comes_back_as_a_typed_result_with_its_stored_frame(
        pipeline: Pipeline):
    jpeg_id, png_id = pipeline.published
    with pipeline.client("viewer") as fw:
        result = fw.result(jpeg_id)
        listed = fw.results(camera=pipeline.camera, since=timedelta(minutes=10))
        frame, thumbnail = fw.frame(jpeg_id), fw.thumbnail(jpeg_id)
        assert fw.results(camera=pipeline.camera, limit=1)[0].frame_id in pipeline.published
        assert fw.results(camera="no-such-camera", since="1h") == []
    assert isinstance(result, Result) and result.camera_id == pipeline.camera
    assert isinstance(result.captured_at, datetime) and result.captured_at.utcoffset() == \
        timedelta(0)
    assert result.captured_at <= result.stored_at
    assert (result.orig_width, result.orig_height) == (512, 512)
    assert [d.label for d in result.detections] == ["face"]  # the astronaut's
    assert result.detection_count == 1 and result.model_name
    assert result.frame_url == f"/api/v1/results/{jpeg_id}/frame"
    assert result.thumbnail_url == f"/api/v1/results/{jpeg_id}/thumbnail"
    assert frame[:3] == thumbnail[:3] == b"\xff\xd8\xff"  # JPEG
    assert cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR) is not None
    # the PNG, published from a file, went the same way
    assert {r.frame_id for r in listed} == {jpeg_id, png_id}
    assert next(r for r in listed if r.frame_id == png_id).orig_width == 640


def test_the_trace_of_a_published_frame_starts_in_the_gateway(pipeline: Pipeline):
    jpeg_id = pipeline.published[0]
    with pipeline.client("viewer") as fw:
        trace = wait_until(lambda: fw.trace(jpeg_id), 20, "the frame's trace",
                           ignoring=(NotFound,))
    assert trace.frame_id == jpeg_id and trace.spans[0].service == "gateway"
    assert {s.trace_id for s in trace.spans} == {trace.trace_id}
    assert trace.spans[0].duration_ms >= 0


def test_the_stream_resumes_after_a_dropped_connection_without_a_duplicate(
        pipeline: Pipeline):
    with pipeline.client("operator") as fw, \
            fw.stream(camera="sdk-live", reconnect_delay=0.1) as stream:
        first_id = fw.publish("sdk-live", jpeg(synthetic_frame(2)))
        (first,) = take(stream, 1)
        assert first.frame_id == first_id
        after_first = stream.last_event_id
        assert after_first and after_first.endswith(first_id)
        assert stream.response is not None
        stream.response.close()  # the connection drops
        second_id = fw.publish("sdk-live", jpeg(synthetic_frame(3)))
        (second,) = take(stream, 1)  # not the first again
        assert second.frame_id == second_id and stream.reconnects == 1
        assert stream.last_event_id != after_first
        # a program that kept the position goes on from there with a new stream
        with fw.stream(camera="sdk-live", last_event_id=after_first) as resumed:
            assert [r.frame_id for r in take(resumed, 1)] == [second_id]


def test_refusals_raise_the_matching_exception_with_status_detail_and_code(
        pipeline: Pipeline):
    with Client(pipeline.url, "fw_00000000_not-a-token") as stranger:
        with pytest.raises(Unauthorized) as refused:
            stranger.results()
        with pytest.raises(Unauthorized):
            stranger.stream()  # at once, not on the first read
    assert refused.value.status == 401 and "framewire token create" in refused.value.detail
    with pipeline.client("viewer") as viewer:
        with pytest.raises(Forbidden) as low:
            viewer.publish(pipeline.camera, astronaut())
        with pytest.raises(NotFound):
            viewer.result("NO-SUCH-FRAME")
        with pytest.raises(NotFound):
            viewer.frame("NO-SUCH-FRAME")
    assert low.value.status == 403 and "needs the operator role" in low.value.detail
    with pipeline.client("operator") as operator:
        with pytest.raises(FramewireAPIError) as cut:
            operator.publish(pipeline.camera, astronaut()[:-200])  # cut short in transfer
        with pytest.raises(ValueError, match="JPEG or PNG"):
            operator.publish(pipeline.camera, b"GIF89a" + bytes(100))  # refused before sending
    assert (cut.value.status, cut.value.code) == (422, "truncated_image")
    with Client(f"http://127.0.0.1:{free_port()}", "x") as nowhere, \
            pytest.raises(Unreachable):
        nowhere.status()


def test_cameras_are_added_changed_listed_and_removed_through_the_sdk(
        pipeline: Pipeline, tmp_path: Path):
    folder = tmp_path / "shots"
    folder.mkdir()
    with pipeline.client("operator") as fw:
        added = fw.cameras.add("sdk-door", str(folder), fps=2, loop=True, retention="7d")
        assert isinstance(added, Camera) and added.origin == "topic"
        assert (added.camera_id, added.fps, added.loop, added.retention) == (
            "sdk-door", 2, True, "7d")
        changed = fw.cameras.update("sdk-door", str(folder), fps=5)
        assert (changed.fps, changed.loop, changed.retention) == (5, False, None)
        assert "sdk-door" in {c.camera_id for c in fw.cameras.list()}
        with pytest.raises(FramewireAPIError) as bad:
            fw.cameras.add("sdk-bad", "ftp://example.invalid/x")
        assert bad.value.status == 422
        with pipeline.client("viewer") as viewer, pytest.raises(Forbidden):
            viewer.cameras.remove("sdk-door")
        fw.cameras.remove("sdk-door")
        assert "sdk-door" not in {c.camera_id for c in fw.cameras.list()}
        with pytest.raises(NotFound):
            fw.cameras.remove("sdk-door")
        with pytest.raises(NotFound):
            fw.cameras.update("sdk-door", str(folder))


def test_status_dead_letters_and_a_dry_run_replay_through_the_sdk(pipeline: Pipeline):
    with pipeline.client("operator") as fw:
        status = fw.status()
        letters = fw.dead_letters()
        dry = fw.replay_dead_letters(reason="corrupt_image", since="1h", dry_run=True)
    assert {"gateway", "storage", "broker"} <= {entry["service"] for entry in status}
    assert all(isinstance(d, DeadLetterReport) for d in letters)
    assert dry.dry_run and dry.outcome == {} and dry.matched == sum(
        d.code == "corrupt_image" for d in letters)


# -- Kafka -----------------------------------------------------------------------------------


def test_the_detections_consumer_decodes_results_and_commits_only_handled_ones(
        pipeline: Pipeline):
    site, consumer = pipeline.site, pipeline.reader
    seen: list[tuple[InferenceResult, int, int]] = []

    def both_read() -> bool:
        result = consumer.poll(0.5)
        if result is not None and result.camera_id == pipeline.camera:
            msg = consumer.last_message
            assert msg is not None
            assert decode_result(msg.value()) == result  # any client's bytes decode the same
            seen.append((result, msg.partition(), msg.offset()))
        return len(seen) == 2

    try:
        wait_until(both_read, 30, "the camera's two results from the detections topic")
    finally:
        consumer.close()  # the second was not handled: its offset is not committed
    (first, partition, first_offset), (second, _, second_offset) = seen
    assert [first.frame_id, second.frame_id] == pipeline.published
    assert isinstance(first, InferenceResult) and first.detections[0].label == "face"
    probe = Consumer({"bootstrap.servers": site.settings.bootstrap_servers,
                      "group.id": pipeline.group})
    try:
        (committed,) = probe.committed([TopicPartition(f"{site.prefix}detections", partition)],
                                       timeout=10)
    finally:
        probe.close()
    assert committed.offset == second_offset > first_offset  # the group reads the second again


def test_the_detections_consumer_refuses_a_framewire_services_group(pipeline: Pipeline):
    with pytest.raises(ValueError, match="Framewire's own"):
        DetectionsConsumer("127.0.0.1:1", f"{pipeline.site.prefix}framewire-storage",
                           topic_prefix=pipeline.site.prefix)
