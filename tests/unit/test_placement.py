"""Camera placement: even over partitions and over consumers, stable once made."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from framewire.broker.placement import CameraPlacement, choose_partition, range_owner, spread_order

BENCH_CAMERAS = [f"bench-720p-{i}" for i in range(1, 5)] + [f"bench-1080p-{i}" for i in range(1, 5)]


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 6, 7, 12, 16, 100])
def test_the_spread_order_visits_every_partition_once(partitions):
    assert sorted(spread_order(partitions)) == list(range(partitions))


@pytest.mark.parametrize("consumers", [2, 3, 4])
@pytest.mark.parametrize("cameras", [2, 5, 8, 12, 20])
def test_cameras_are_shared_evenly_by_the_consumers_of_a_range_or_round_robin_assignment(
        consumers, cameras):
    placed: dict[str, int] = {}
    for i in range(cameras):
        placed[f"cam-{i}"] = choose_partition(placed, 12)
    per_partition = Counter(placed.values())
    assert max(per_partition.values()) - min(per_partition.get(p, 0) for p in range(12)) <= 1
    assignments = [Counter(range_owner(p, 12, consumers) for p in placed.values())]
    if consumers == 2:  # round-robin too (range is librdkafka's default)
        assignments.append(Counter(p % 2 for p in placed.values()))
    for shares in assignments:
        counts = [shares.get(c, 0) for c in range(consumers)]
        assert max(counts) - min(counts) <= 1, (shares, sorted(placed.values()))


def test_hashing_the_benchmark_cameras_is_what_placement_fixes():
    # librdkafka's default partitioner (CRC32 of the key): 5 : 3 between two replicas
    hashed = Counter(range_owner(zlib.crc32(c.encode()) % 12, 12, 2) for c in BENCH_CAMERAS)
    assert sorted(hashed.values()) == [3, 5]
    placed: dict[str, int] = {}
    for camera in BENCH_CAMERAS:
        placed[camera] = choose_partition(placed, 12)
    assert sorted(Counter(range_owner(p, 12, 2) for p in placed.values()).values()) == [4, 4]


def test_a_placement_is_kept_across_restarts_and_new_cameras_take_the_emptiest(tmp_path):
    path = tmp_path / "camera-partitions.json"
    first = CameraPlacement(path)
    before = {c: first.partition_for(c, 12) for c in BENCH_CAMERAS[:5]}
    again = CameraPlacement(path)  # a restarted ingest, cameras seen in another order
    assert {c: again.partition_for(c, 12) for c in reversed(BENCH_CAMERAS[:5])} == before
    newcomer = again.partition_for("door", 12)
    assert newcomer not in before.values()  # an empty partition, not one of the five


def test_two_ingests_on_one_host_share_the_table(tmp_path):
    path = tmp_path / "camera-partitions.json"
    a, b = CameraPlacement(path), CameraPlacement(path)
    pa = a.partition_for("cam-a", 4)
    pb = b.partition_for("cam-b", 4)
    assert pa != pb
    assert a.partition_for("cam-b", 4) == pb  # a reads what b placed


def test_a_new_partition_count_places_cameras_again(tmp_path):
    path = tmp_path / "camera-partitions.json"
    placement = CameraPlacement(path)
    placement.partition_for("cam-a", 12)
    assert 0 <= placement.partition_for("cam-a", 3) < 3


def test_an_unreadable_table_is_replaced(tmp_path):
    path = tmp_path / "camera-partitions.json"
    path.write_text("{not json")
    assert CameraPlacement(path).partition_for("cam-a", 6) == 0
    assert '"cam-a": 0' in path.read_text()
