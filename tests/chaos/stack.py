"""The services under test as OS processes: start, settle, kill; their rows and positions."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from framewire.broker.client import client_config
from framewire.broker.reading import read_topic
from framewire.config import Settings
from framewire.contracts import ServiceHeartbeat
from framewire.contracts.codec import Codec
from framewire.errors import TransientError
from framewire.topology import topology
from tests.fixtures.common import wait_until
from tests.fixtures.kafka import Site
from tests.integration.test_pipeline import stored_count as stored_count  # re-exported

STAGES = ("preprocess", "inference", "storage")
PARTITIONS = 4  # the site fixture's FRAMEWIRE_PARTITIONS
LONG = [pytest.mark.slow, pytest.mark.timeout(900)]  # marks of the long versions


def pids(site: Site, service: str) -> list[int]:
    """Process ids of the running replicas of ``service``."""
    return [p.pid for p in site.procs.get(service, []) if p.poll() is None]


def start_stack(site: Site, doubled: str | None = None) -> None:
    """One replica of each stage, two of ``doubled``; wait until every group has settled."""
    site.start(*STAGES)
    if doubled is not None:
        site.start(doubled)
    wait_for_groups(site.settings, {s: pids(site, s) for s in STAGES}, PARTITIONS)


def kill_9(site: Site, service: str, pid: int) -> None:
    """SIGKILL one replica and reap it."""
    proc = next(p for p in site.procs[service] if p.pid == pid)
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def live_beats(settings: Settings, service: str, pids: Iterable[int]) -> list[ServiceHeartbeat]:
    """The latest running heartbeat of each of ``pids`` for ``service``.

    Reads the status topic for at most a few seconds: with heartbeats arriving every 0.5 s
    the reader never sees the partition's end and would otherwise wait its full timeout.
    """
    wanted, codec, latest = set(pids), Codec(), {}
    for msg in read_topic(settings, settings.topic("status"), tail=400, idle_s=0.2, timeout_s=2.5):
        beat = codec.decode(msg.value(), ServiceHeartbeat)
        if beat.service == service and beat.pid in wanted:
            latest[beat.pid] = beat
    return [b for b in latest.values() if b.state == "running"]


def wait_for_groups(settings: Settings, replicas: dict[str, list[int]], partitions: int,
                    timeout_s: float = 90) -> None:
    """Wait until each service's replicas all run and share every partition of its topic."""

    def settled() -> bool:
        for service, pids in replicas.items():
            beats = live_beats(settings, service, pids)
            owned = [len(b.partitions) for b in beats]
            if len(beats) != len(pids) or sum(owned) != partitions or 0 in owned:
                return False
        return True

    wait_until(settled, timeout_s, f"replicas {({s: len(p) for s, p in replicas.items()})} "
               f"to share {partitions} partitions each", interval_s=0.5,
               ignoring=(TransientError,))


def group_positions(settings: Settings) -> str:
    """Per stage, per partition: committed offset / end offset of its input topic (diagnosis)."""
    lines = []
    for service, topic_name in ((s.name, s.input) for s in topology(settings).consumers):
        topic = settings.topic(topic_name)
        consumer = Consumer(client_config(settings, **{
            "group.id": settings.group(service), "enable.auto.commit": False, "log_level": 0}))
        try:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            parts = [TopicPartition(topic, p) for p in (meta.partitions if meta else {})]
            committed = consumer.committed(parts, timeout=5) if parts else []
            ends = [consumer.get_watermark_offsets(tp, 5)[1] for tp in parts]
            lines.append(f"{service}: " + ", ".join(
                f"p{tp.partition} {tp.offset}/{end}" for tp, end in zip(committed, ends,
                                                                        strict=True)))
        except KafkaException as exc:
            lines.append(f"{service}: {exc}")
        finally:
            consumer.close()
    return "; ".join(lines)


def assert_stages_alive(site: Site) -> None:
    exited = [s for s in STAGES if not site.alive(s)]
    assert not exited, f"{exited} exited; see {site.home}/logs"


def ride_out(site: Site, seconds: float) -> None:
    """Let ``seconds`` pass (a broker away), failing at once if a service gives up and exits."""
    hold = threading.Event()  # never set: waiting on it spaces the liveness checks
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        assert_stages_alive(site)
        hold.wait(min(0.5, left))
