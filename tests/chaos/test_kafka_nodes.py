"""Apache Kafka's nodes fail under load: nothing acknowledged is lost, nothing stored twice.

The session's 3-node KRaft cluster holds each partition on all three nodes (replication
factor 3) and acknowledges a write once two have it (min.insync.replicas 2, acks=all). Its
log is on disk, so unlike the embedded broker a whole-cluster stop loses nothing. Each test
leaves the cluster as it found it: every node up, every partition fully replicated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from framewire.broker.cluster import KafkaCluster
from framewire.config import Settings
from tests.chaos.ledger import Ledger, SteadyIngest, Workload, count, detections_repeats
from tests.chaos.ledger import wait_until_accounted as wait_accounted
from tests.chaos.stack import (
    LONG,
    STAGES,
    assert_stages_alive,
    pids,
    ride_out,
    start_stack,
    stored_count,
)
from tests.fixtures.kafka import Site, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@dataclass(frozen=True)
class Load:
    workload: Workload
    outage_s: float = 0.0


NODE_KILL = [
    pytest.param(Load(Workload(cameras=6, frames_per_camera=15, fps_per_camera=6)),
                 id="bounded"),
    pytest.param(Load(Workload(cameras=6, frames_per_camera=100, fps_per_camera=6)),
                 id="long", marks=LONG),
]
# with -m slow even bounded (a minute): make test keeps an outage through the embedded broker's
# (test_broker_outage.py) and a node's loss through the kill -9 above
CLUSTER_STOP = [
    pytest.param(Load(Workload(cameras=6, frames_per_camera=40, fps_per_camera=None), 20),
                 id="bounded", marks=pytest.mark.slow),
    pytest.param(Load(Workload(cameras=6, frames_per_camera=150, fps_per_camera=None), 60),
                 id="long", marks=LONG),
]
# the stream runs until every node has been restarted (at most this many frames), then stops.
# Three JVM restarts take over a minute whatever the load, so even the bounded version runs
# with -m slow; make test keeps a node's death through the kill -9 test above.
ROLLING = [
    pytest.param(Load(Workload(cameras=4, frames_per_camera=600, fps_per_camera=2)),
                 id="bounded", marks=pytest.mark.slow),
    pytest.param(Load(Workload(cameras=6, frames_per_camera=600, fps_per_camera=6)),
                 id="long", marks=LONG),
]


def under_replicated(bootstrap: str) -> int | None:
    """Partitions with fewer in-sync replicas than replicas (None: no answer)."""
    try:
        topics = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(
            timeout=5).topics
    except KafkaException:
        return None
    return sum(1 for t in topics.values() for p in t.partitions.values()
               if p.leader < 0 or len(p.isrs) < len(p.replicas))


def wait_fully_replicated(cluster: KafkaCluster, timeout_s: float = 120) -> None:
    wait_until(lambda: under_replicated(cluster.bootstrap_servers) == 0, timeout_s,
               "every partition back in sync on all nodes")


@pytest.fixture
def cluster(kafka_cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """The session cluster, whole again (every node up and in sync) after the test."""
    wait_fully_replicated(kafka_cluster)
    try:
        yield kafka_cluster
    finally:
        for node in kafka_cluster.members:
            if not node.alive:
                kafka_cluster.start_node(node.node_id)
        wait_fully_replicated(kafka_cluster)


def busiest_leader(settings: Settings) -> int:
    """The node that leads the most partitions of the site's data topics."""
    topics = AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(
        timeout=10).topics
    leaders = Counter(p.leader for name in ("frames.raw", "frames.ready", "detections")
                      for p in topics[settings.topic(name)].partitions.values())
    return leaders.most_common(1)[0][0]


def settle(site: Site, published: set[str], what: str, ledger: Ledger, notes: list[str]):
    wait_accounted(site.settings, published, 240, what, guard=lambda: assert_stages_alive(site))
    return ledger.record(count(what, site.settings, published, notes))


# with exactly_once the stage must ride out librdkafka hanging in send_offsets_to_transaction
# when the group coordinator's node dies (framewire.runtime.loop.ProducerHung)
EXACTLY_ONCE_NODE_KILL = pytest.param("exactly_once", marks=pytest.mark.slow)


@pytest.mark.parametrize("delivery", ["at_least_once", EXACTLY_ONCE_NODE_KILL])
@pytest.mark.parametrize("load", NODE_KILL)
def test_kill_9_of_one_of_three_kafka_nodes_mid_stream_loses_and_duplicates_nothing(
        cluster: KafkaCluster, kafka_site: Site, ledger: Ledger, load: Load, delivery: str):
    """Frames stream in; once some are stored, the node leading the most of the site's
    partitions is killed with SIGKILL. Its partitions' leadership moves to the two others,
    which still make the min ISR of 2: producers and consumers carry on. With exactly_once
    the transactions in flight on the dead node's partitions fail, are aborted and redone:
    no repeat reaches the ``detections`` topic."""
    site = kafka_site
    site.env["FRAMEWIRE_DELIVERY"] = delivery
    start_stack(site)
    service_pids = {s: pids(site, s) for s in STAGES}
    ingest = SteadyIngest(site.settings, load.workload).start()
    wait_until(lambda: stored_count(site) >= load.workload.total // 6, 120,
               "some results stored")
    victim = busiest_leader(site.settings)
    stored_at_kill = stored_count(site)
    cluster.kill_node(victim)
    journal = ingest.join(300)
    assert not journal.unacknowledged and not journal.failed
    tally = settle(site, journal.acked, f"kill -9 Kafka node {victim} of 3 "
                   f"[{load.workload.total} frames] on kafka, {delivery}", ledger,
                   [f"stored when killed {stored_at_kill}", "RF 3, min ISR 2"])
    if delivery == "exactly_once":
        assert detections_repeats(site.settings) == 0

    assert tally.lost == 0
    assert tally.duplicated == 0
    assert len(journal.acked) == load.workload.total
    assert stored_at_kill < load.workload.total, "the kill came after everything was stored"
    assert {s: pids(site, s) for s in STAGES} == service_pids, "a service exited or restarted"


@pytest.mark.parametrize("load", CLUSTER_STOP)
def test_whole_kafka_cluster_stopped_under_load_loses_nothing_when_it_returns(
        cluster: KafkaCluster, kafka_site: Site, ledger: Ledger, load: Load):
    """A burst is published; once some of it is stored, all three nodes stop (SIGTERM) for
    the outage, then start again on their data. The frames still in the topics when the
    cluster stopped were lost with the embedded broker's memory; here the log keeps them:
    every acknowledged frame is stored once."""
    site = kafka_site
    start_stack(site)
    service_pids = {s: pids(site, s) for s in STAGES}
    burst = SteadyIngest(site.settings, load.workload).start().join(180)
    assert len(burst.acked) == load.workload.total
    wait_until(lambda: stored_count(site) >= load.workload.total // 10, 120,
               "some results stored")
    cluster.stop()
    stored_at_stop = stored_count(site)
    ride_out(site, load.outage_s)
    for node in cluster.members:
        cluster.launch(node)
    cluster.wait_ready(120)
    tally = settle(site, burst.acked, f"Kafka cluster down {load.outage_s:.0f} s "
                   f"[{load.workload.total} frames] on kafka", ledger,
                   [f"stored when stopped {stored_at_stop}",
                    "waiting in the topics when stopped "
                    f"{load.workload.total - stored_at_stop}"])
    lost_with_broker = tally.lost
    tally.notes.append(f"lost with the broker {lost_with_broker} (durable log)")

    assert stored_at_stop < load.workload.total, "the stop came after everything was stored"
    assert lost_with_broker == 0
    assert tally.duplicated == 0
    assert {s: pids(site, s) for s in STAGES} == service_pids, "a service exited or restarted"


@pytest.mark.parametrize("load", ROLLING)
def test_rolling_restart_of_three_kafka_nodes_under_load_loses_and_duplicates_nothing(
        cluster: KafkaCluster, kafka_site: Site, ledger: Ledger, load: Load):
    """Frames stream at a steady pace while each node in turn is stopped (SIGTERM: a
    controlled shutdown that hands its leaderships over), started again, and waited for until
    every partition is back in sync, as an operator upgrades a cluster."""
    site = kafka_site
    start_stack(site)
    service_pids = {s: pids(site, s) for s in STAGES}
    ingest = SteadyIngest(site.settings, load.workload).start()
    wait_until(lambda: stored_count(site) >= 1, 120, "a first result stored")
    restarted = []
    for node in cluster.members:
        if ingest.done.is_set():
            break
        cluster.stop_node(node.node_id)
        assert_stages_alive(site)
        cluster.start_node(node.node_id)
        wait_fully_replicated(cluster)
        restarted.append(node.node_id)
    ingest.halt.set()
    journal = ingest.join(300)
    assert not journal.unacknowledged and not journal.failed
    tally = settle(site, journal.acked, f"rolling restart of Kafka nodes {restarted} "
                   f"[{len(journal.acked)} frames] on kafka", ledger,
                   ["one node at a time, in sync before the next"])

    assert restarted == [1, 2, 3], "the stream ended before every node was restarted"
    assert len(journal.acked) < load.workload.total, "the stream ended before the restarts did"
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert {s: pids(site, s) for s in STAGES} == service_pids, "a service exited or restarted"
