"""The services under test as OS processes: start, settle, kill, count rows."""

from __future__ import annotations

import os
import signal

import pytest

from framewire.db import open_database
from tests.chaos.ledger import wait_for_groups
from tests.fixtures.kafka import Site

STAGES = ("preprocess", "inference", "storage")
PARTITIONS = 4  # the site fixture's FRAMEWIRE_PARTITIONS
LONG = [pytest.mark.slow, pytest.mark.timeout(900)]  # marks of the long versions


def stored_count(site: Site) -> int:
    db = open_database(site.settings.resolved_database_url)
    try:
        return db.count_results()
    finally:
        db.close()


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
