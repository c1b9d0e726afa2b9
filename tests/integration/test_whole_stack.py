"""The whole stack under `framewire run`: SIGKILL and restart, and broker memory recycling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from framewire.config import load_settings
from framewire.ops.supervisor import Supervisor
from framewire.store.db import open_database
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.images import jpeg, synthetic_frame
from tests.fixtures.kafka import Site
from tests.integration.test_pipeline import publish

pytestmark = pytest.mark.integration


def stored(home: Path) -> int:
    db_file = home / "framewire.db"
    if not db_file.exists():
        return 0
    db = open_database(f"sqlite:///{db_file}")
    try:
        return db.count_results()
    finally:
        db.close()


def descendants(pid: int) -> list[int]:
    """Every process started under ``pid`` (children, their children...)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start_run(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FRAMEWIRE_HOME": str(home),
           "FRAMEWIRE_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "FRAMEWIRE_PARTITIONS": "4",
           "FRAMEWIRE_DEMO_FPS": "4", "FRAMEWIRE_HEARTBEAT_INTERVAL_S": "0.5",
           "FRAMEWIRE_GATEWAY__PORT": "0"}  # a free port: another run may hold 8080
    log = (home / "run.out").open("ab")
    return subprocess.Popen([sys.executable, "-m", "framewire.cli", "run"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def test_whole_stack_killed_with_sigkill_comes_back_and_processes_new_frames(tmp_path):
    """SIGKILL every process of `framewire run` (broker included), then start it again.

    What is lost, by design of the embedded broker (memory only): frames in flight in the
    broker at the kill. What must hold: stored rows survive, and the restarted stack stores
    new frames from the demo cameras.
    """
    home, port = tmp_path / "home", free_port()
    home.mkdir()
    first = start_run(home, port)
    try:
        wait_until(lambda: stored(home) >= 10, 120, "the first run to store 10 results")
        # the gateway is one of its processes (port 0: the URL it got is in gateway.url)
        wait_until(lambda: (home / "gateway.url").exists(), 30, "the gateway to listen")
        url = (home / "gateway.url").read_text().strip()
        assert urllib.request.urlopen(f"{url}/openapi.json", timeout=10).status == 200
        victims = [first.pid, *descendants(first.pid)]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        first.wait(10)
        wait_until(lambda: not any(Path(f"/proc/{p}").exists() and
                                   "zombie" not in Path(f"/proc/{p}/status").read_text().lower()
                                   for p in victims), 30, "every process of the stack to be gone")
        before = stored(home)
    finally:
        if first.poll() is None:
            first.kill()
    second = start_run(home, port)
    try:
        wait_until(lambda: stored(home) >= before + 10, 120, "the restarted stack to store more")
        assert stored(home) >= before + 10
    finally:
        second.send_signal(signal.SIGINT)
        assert second.wait(60) == 0


def test_recycling_the_broker_frees_memory_and_loses_no_frame(tmp_path, broker):
    port = free_port()
    site = Site(broker, tmp_path / "home")
    site.env["FRAMEWIRE_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    site.env["FRAMEWIRE_BROKER_MEMORY_BUDGET_MB"] = "1"
    os.environ.update(site.env)
    try:
        settings = load_settings()
        sup = Supervisor(settings, ["preprocess", "inference", "storage"], demo=False)
        sup.start()
        try:
            publish(site, [(f"cam-{i % 3}", jpeg(synthetic_frame(i, i % 3))) for i in range(12)])
            wait_until(lambda: stored(site.home) == 12, 120, "12 stored before the recycle")
            old_pid = sup.broker.process.pid
            assert sup.over_memory_budget()
            assert sup.recycle_broker()
            assert sup.broker.process.pid != old_pid
            publish(site, [(f"cam-{i % 3}", jpeg(synthetic_frame(i, i % 3)))
                           for i in range(12, 24)])
            wait_until(lambda: stored(site.home) == 24, 120, "12 more stored after the recycle")
            db = open_database(settings.resolved_database_url)
            assert db.count_results() == 24
            db.close()
        finally:
            sup.stop()
    finally:
        for key in site.env:
            os.environ.pop(key, None)
