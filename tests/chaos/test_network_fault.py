"""A bad network between inference and the broker: throughput drops, nothing is lost.

The broker listens on the host end of a veth pair; inference runs in a network namespace at
the other end (``ip netns exec``), preprocess and storage run here. The same test publishes a
burst over the clean link, then puts the fault on both ends of the pair and publishes another
burst; both bursts must be stored exactly once. Throughput (frames stored per second, from the
first publish to the last row) is reported for both, for information only.

Faults: ``netem delay 100ms loss 5%`` (what the suite is specified with) and, because some
kernels (this sandbox's among them) ship no ``sch_netem``, a token-bucket squeeze of the link
(``tbf``: 1 Mbit/s, a queue of at most 100 ms, then tail drops): queueing delay and real packet
loss, made with a qdisc every kernel here has. A fault whose qdisc the kernel lacks is skipped
with tc's own error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from framewire.broker.client import EmbeddedBroker
from framewire.procutil import die_with_parent
from tests.chaos.ledger import (
    Ledger,
    SteadyIngest,
    Workload,
    count,
    wait_until_accounted,
)
from tests.chaos.netfault import QdiscUnavailable, VethLink
from tests.chaos.stack import LONG, PARTITIONS, STAGES, pids, wait_for_groups
from tests.fixtures.common import ensure_debian_packages, free_port
from tests.fixtures.kafka import Site

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FAULTS = [
    pytest.param("netem delay 100ms loss 5%", id="netem-delay-loss"),
    pytest.param("tbf rate 1mbit burst 16kbit latency 100ms", id="tbf-slow-lossy-link"),
]
BURSTS = [
    pytest.param(Workload(cameras=6, frames_per_camera=10, fps_per_camera=None), id="bounded"),
    pytest.param(Workload(cameras=6, frames_per_camera=60, fps_per_camera=None), id="long",
                 marks=LONG),
]


@pytest.fixture
def link(request: pytest.FixtureRequest) -> Iterator[VethLink]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and qdiscs need root")
    ensure_debian_packages(request.config, {"ip": "iproute2", "tc": "iproute2"})
    veth = VethLink()
    try:
        yield veth.open()
    finally:
        veth.close()


@pytest.fixture
def split_site(link: VethLink, tmp_path: Path) -> Iterator[Site]:
    """A broker on the host end of ``link``; inference across the link, the rest here."""
    home = tmp_path / "home"
    broker = EmbeddedBroker(link.host_address, free_port(), home / "logs" / "broker.log")
    broker.start()
    site = Site(broker, home)
    try:
        site.create_topics()
        site.start("preprocess", "storage")
        out = (home / "logs" / "inference-0.log").open("ab")
        site.procs["inference"] = [subprocess.Popen(
            link.in_namespace(sys.executable, "-m", "framewire.cli", "service", "inference"),
            env={**os.environ, **site.env}, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)]
        yield site
    finally:
        site.stop()
        broker.stop()


def publish_and_time(site: Site, burst: Workload, prefix: str) -> tuple[set[str], float]:
    """Publish a burst; wait until all of it is stored or dead-lettered. (ids, frames/s)."""
    ingest = SteadyIngest(site.settings, burst, camera_prefix=prefix).start()
    published = ingest.join(120).acked
    assert len(published) == burst.total
    wait_until_accounted(site.settings, published, 300, f"the {prefix} burst",
                         guard=lambda: assert_alive(site))
    return published, burst.total / (time.monotonic() - ingest.started_at)


def assert_alive(site: Site) -> None:
    assert all(site.alive(s) for s in STAGES), f"a service exited; see {site.home}/logs"


@pytest.mark.parametrize("burst", BURSTS)
@pytest.mark.parametrize("fault", FAULTS)
def test_a_degraded_link_to_the_broker_slows_inference_but_loses_nothing(
        link: VethLink, split_site: Site, ledger: Ledger, fault: str, burst: Workload):
    site = split_site
    try:  # find out now, not after the clean half, whether the kernel has this qdisc
        link.degrade(fault)
    except QdiscUnavailable as exc:
        pytest.skip(f"cannot make the fault {fault!r} on this kernel: {exc}")
    link.heal()
    wait_for_groups(site.settings, {s: pids(site, s) for s in STAGES}, PARTITIONS)

    clean, clean_fps = publish_and_time(site, burst, "clean")
    link.degrade(fault)
    faulty, faulty_fps = publish_and_time(site, burst, "faulty")
    qdisc = link.qdisc_counts()

    tally = ledger.record(count(
        f"{fault} on inference's link [{2 * burst.total}]", site.settings, clean | faulty,
        [f"throughput clean {clean_fps:.1f} frames/s, with the fault {faulty_fps:.1f} "
         f"frames/s ({100 * (1 - faulty_fps / clean_fps):.0f}% drop)",
         f"packets through the fault {qdisc['sent']}, dropped by it {qdisc['dropped']}"]))

    assert tally.lost == 0
    assert tally.duplicated == 0
    assert_alive(site)
