"""The broker goes away mid-run and comes back: the services recover without a restart.

The embedded broker (Tansu, memory storage) comes back empty: topics, records, committed
offsets and producer ids are gone. Frames that were still in its topics are lost with it
(counted and reported, expected with memory storage); every frame published after it is back
must be stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from framewire.broker.client import EmbeddedBroker, client_config
from framewire.config import Settings
from framewire.topology import topology
from tests.chaos.ledger import (
    Ledger,
    SteadyIngest,
    Workload,
    count,
    unaccounted,
    wait_until_accounted,
)
from tests.chaos.stack import (
    LONG,
    PARTITIONS,
    STAGES,
    assert_stages_alive,
    pids,
    ride_out,
    start_stack,
    stored_count,
)
from tests.fixtures.common import free_port
from tests.fixtures.kafka import Site, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@dataclass(frozen=True)
class Outage:
    seconds: float
    before: Workload  # a burst: the services still have work in hand when the broker stops
    after: Workload  # published at a steady pace once the broker is back


OUTAGES = [
    pytest.param(Outage(8, Workload(cameras=6, frames_per_camera=15, fps_per_camera=None),
                        Workload(cameras=6, frames_per_camera=15, fps_per_camera=6)),
                 id="bounded"),
    pytest.param(Outage(20, Workload(cameras=6, frames_per_camera=40, fps_per_camera=None),
                        Workload(cameras=6, frames_per_camera=60, fps_per_camera=6)),
                 id="long", marks=LONG),
]


@pytest.fixture
def own_site(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, Site]]:
    """A broker of this test's own (it will be stopped) and a site on it."""
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path / "home" / "logs" / "broker.log")
    broker.start()
    site = Site(broker, tmp_path / "home")
    site.create_topics()
    try:
        yield broker, site
    finally:
        site.stop()
        broker.stop()


TOPICS = tuple(topology().topics)
EXPECTED_PARTITIONS = {name: 1 if topology().topic(name).single_partition else PARTITIONS
                       for name in TOPICS}


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Partitions of each of the site's topics that exist on the broker now."""
    topics = AdminClient(client_config(settings)).list_topics(timeout=5).topics
    return {name: len(topics[settings.topic(name)].partitions) for name in TOPICS
            if settings.topic(name) in topics}


def crash(broker: EmbeddedBroker) -> None:
    """SIGKILL the broker: gone at once, as in a crash (a SIGTERM lets Tansu serve on for
    seconds while it shuts down, so the outage would start at no clear moment)."""
    proc, broker.process = broker.process, None
    assert proc is not None
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("outage", OUTAGES)
def test_services_recover_by_themselves_and_store_every_frame_published_after_the_broker_returns(
        own_site: tuple[EmbeddedBroker, Site], ledger: Ledger, outage: Outage):
    """Preprocess, inference and storage run; a burst of frames is published and, once some are
    stored, the broker is killed for the outage and started again, empty, on the same port. The test
    does not recreate the topics: the services must (``framewire run``'s supervisor would too).
    Nothing is restarted: the services must reconnect, recreate the topics, rejoin their groups
    and process the frames published after the broker is back (all stored, none twice)."""
    broker, site = own_site
    start_stack(site)
    service_pids = {s: pids(site, s) for s in STAGES}

    before = SteadyIngest(site.settings, outage.before, camera_prefix="before").start().join(120)
    assert len(before.acked) == outage.before.total
    wait_until(lambda: stored_count(site) >= outage.before.total // 6, 120, "some results stored")
    crash(broker)
    stored_before_outage = stored_count(site)
    ride_out(site, outage.seconds)
    broker.start()
    wait_until(lambda: topic_partitions(site.settings) == EXPECTED_PARTITIONS, 60,
               "the services to recreate the topics the broker lost", ignoring=(KafkaException,))

    after = SteadyIngest(site.settings, outage.after, camera_prefix="after").start().join(180)
    assert len(after.acked) == outage.after.total and not after.unacknowledged
    wait_until_accounted(site.settings, after.acked, 120,
                         f"frames published after a {outage.seconds:.0f} s broker outage",
                         guard=lambda: assert_stages_alive(site))
    lost_with_broker = unaccounted(site.settings, before.acked)
    tally = ledger.record(count(
        f"broker down {outage.seconds:.0f} s, frames after recovery [{outage.after.total}]",
        site.settings, after.acked,
        [f"before the outage: published {outage.before.total}, stored before it "
         f"{stored_before_outage}, lost with the broker {len(lost_with_broker)} "
         "(memory storage)"], others=before.acked))

    assert tally.lost == 0
    assert tally.duplicated == 0
    assert stored_before_outage < outage.before.total, "the outage came after all was stored"
    assert {s: pids(site, s) for s in STAGES} == service_pids, "a service exited or restarted"
    logs = {s: (site.home / "logs" / f"{s}-0.log").read_text(errors="replace") for s in STAGES}
    assert [s for s in STAGES if "broker unreachable" not in logs[s]] == []
