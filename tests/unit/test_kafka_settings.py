"""Settings and plans for Apache Kafka, without a broker: durations, replication, node layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from framewire.broker.client import COMPACTED, topic_plans
from framewire.broker.cluster import KafkaCluster, new_cluster_id
from framewire.config import duration_ms, load_settings
from framewire.errors import ConfigError


@pytest.mark.parametrize(("text", "ms"), [("500ms", 500), ("90s", 90_000), ("15m", 900_000),
                                          ("24h", 86_400_000), ("30d", 2_592_000_000),
                                          ("-1", -1), (1234, 1234)])
def test_durations_read_with_their_units(text: str | int, ms: int) -> None:
    assert duration_ms(text) == ms


def test_a_duration_without_a_known_unit_is_refused_saying_how_to_write_it() -> None:
    with pytest.raises(ValueError, match="24h"):
        duration_ms("a day")


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)),
                                                   (5, (3, 2))])
def test_replication_defaults_to_three_copies_at_most_and_min_isr_one_less(
        brokers: int, expected: tuple[int, int]) -> None:
    assert load_settings(broker="kafka").replication(brokers) == expected


def test_data_topics_on_kafka_carry_retention_min_isr_and_replication_from_settings() -> None:
    settings = load_settings(embedded_broker=False, partitions=6,
                             retention={"frames.raw": "6h"}, topic_prefix="site1.")
    plans = {p.name: p for p in topic_plans(settings, brokers=3)}
    raw = plans["site1.frames.raw"]
    assert (raw.partitions, raw.replication) == (6, 3)
    assert raw.configs["retention.ms"] == str(6 * 3_600_000)
    assert raw.configs["min.insync.replicas"] == "2"
    # unset: the retention the writing stage declares (inference: 30 days)
    assert plans["site1.detections"].configs["retention.ms"] == str(duration_ms("30d"))
    assert plans["site1.status"].partitions == 1
    assert set(plans) == {f"site1.{t}" for t in ("frames.raw", "frames.ready", "detections",
                                                 "events", "alerts", "deadletter",
                                                 "status", "cameras", "control")}


def test_topics_on_the_embedded_broker_get_one_replica_and_no_configs_but_compaction() -> None:
    plans = topic_plans(load_settings(), brokers=1)
    assert all(p.replication == 1 for p in plans)
    assert {p.name: p.configs for p in plans if p.configs} == {"cameras": COMPACTED,
                                                               "control": COMPACTED}


@pytest.mark.parametrize(("overrides", "says"), [
    ({"broker": "kafka", "replication_factor": 2, "min_insync_replicas": 3},
     "FRAMEWIRE_MIN_INSYNC_REPLICAS"),
    ({"broker": "kafka", "broker_nodes": 1, "replication_factor": 3}, "FRAMEWIRE_BROKER_NODES"),
    ({"delivery": "exactly_once"}, "FRAMEWIRE_BROKER=kafka"),
    ({"retention": {"frames.cooked": "1h"}}, "unknown topic"),
    ({"retention": {"frames.raw": "soon"}}, "not a duration"),
    ({"broker": "rabbit"}, "FRAMEWIRE_BROKER"),
])
def test_settings_that_can_never_work_are_refused_at_start_naming_the_fix(
        overrides: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(**overrides)


def test_exactly_once_is_accepted_on_apache_kafka_managed_or_not() -> None:
    assert load_settings(broker="kafka", delivery="exactly_once").manages_kafka
    assert not load_settings(embedded_broker=False, delivery="exactly_once").on_tansu


def test_node_n_listens_on_the_bootstrap_port_plus_n_minus_one_and_all_are_voters(
        tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, "127.0.0.1", 19092, nodes=3)
    assert cluster.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    props = [cluster.properties(n) for n in cluster.members]
    voters = "1@127.0.0.1:19095,2@127.0.0.1:19096,3@127.0.0.1:19097"
    assert {p["controller.quorum.voters"] for p in props} == {voters}
    assert props[1]["listeners"] == "PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19096"
    assert props[2]["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19094"
    assert {p["process.roles"] for p in props} == {"broker,controller"}
    assert props[0]["transaction.state.log.min.isr"] == 2
    assert len({p["log.dirs"] for p in props}) == 3
    assert all(p["log.dirs"].startswith(str(tmp_path.resolve())) for p in props)


def test_a_home_formatted_for_another_node_count_is_refused_with_what_to_do(
        tmp_path: Path) -> None:
    first = KafkaCluster(tmp_path, nodes=3)
    cluster_id = first._cluster_id()
    assert KafkaCluster(tmp_path, nodes=3)._cluster_id() == cluster_id
    with pytest.raises(ConfigError, match="FRAMEWIRE_BROKER_NODES=3"):
        KafkaCluster(tmp_path, nodes=1)._cluster_id()


def test_cluster_ids_are_22_url_safe_characters_and_differ() -> None:
    ids = {new_cluster_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 22 and "=" not in i and "+" not in i and "/" not in i for i in ids)
