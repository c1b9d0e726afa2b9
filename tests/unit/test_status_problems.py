"""Status reads heartbeats written by anyone who can write to the broker: a malformed one is
skipped, never a crash of the command (or of `framewire run`, which polls it)."""

from __future__ import annotations

from datetime import timedelta

from framewire.config import load_settings
from framewire.contracts import ServiceHeartbeat, utcnow
from framewire.ops.status import ServiceStatus, instance_problems, stalled_partitions


def beat(partitions: list[str], committed_s_ago: float) -> ServiceHeartbeat:
    now = utcnow()
    return ServiceHeartbeat(
        service="preprocess", instance="h:1", host="h", pid=1, version="x", sent_at=now,
        state="running", partitions=partitions, records_in=0, records_out=0, dead_lettered=0,
        produced_offsets={}, last_commit_at=now - timedelta(seconds=committed_s_ago))


def test_a_heartbeat_with_a_malformed_partition_is_skipped_not_fatal():
    status = ServiceStatus("preprocess", [beat(["frames.raw:abc", "frames.raw:", "frames.raw:1"],
                                              committed_s_ago=120)])
    problems = stalled_partitions(status, {1: 5, 2: 3}, load_settings())
    assert problems == [
        "preprocess: partition 1 has lag 5 but pid 1 has not committed for 120 s: the stage is "
        "stuck; check its log, restart it with SIGTERM",
        "preprocess: partition 2 has lag 3 and no live consumer owns it: a rebalance is "
        "pending or stuck"]
    assert instance_problems(status) == []


def test_webhook_deliveries_given_up_are_not_told_as_dropped_frames():
    gateway = ServiceHeartbeat(
        service="gateway", instance="h:2", host="h", pid=2, version="x", sent_at=utcnow(),
        state="running", partitions=[], records_in=3, records_out=3, dead_lettered=0,
        produced_offsets={}, dropped=3, drop_reasons={"webhook_given_up": 2, "publish_failed": 1})
    problems = instance_problems(ServiceStatus("gateway", [gateway]))
    assert problems == [
        "gateway pid 2 on h: 2 webhook delivery(ies) given up after their retries; GET "
        "/api/v1/webhooks shows each one's last error",
        "gateway pid 2 on h: 1 frame(s) dropped (1 publish_failed: pipeline behind, fps cap, "
        "broker away or refusing frames)"]


def test_the_live_line_counts_stored_frames_not_the_analytics_events_stored_beside_them():
    from framewire.cli import _status_line

    def service(name: str, out: int) -> ServiceStatus:
        return ServiceStatus(name, [ServiceHeartbeat(
            service=name, instance=f"h:{name}", host="h", pid=1, version="x", sent_at=utcnow(),
            state="running", partitions=[], records_in=out, records_out=out, dead_lettered=0,
            produced_offsets={})])

    statuses = [service("ingest", 100), service("storage", 90), service("event_storage", 30),
                service("alert_storage", 2)]
    line, (_, stored) = _status_line(load_settings(), statuses, 0.0, (0.0, 0))
    assert stored == 90 and "frames in 100 | stored 90" in line
