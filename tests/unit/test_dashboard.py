"""The Grafana dashboard only queries metrics that Framewire services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from framewire.telemetry.metrics import service_metrics

DASHBOARD = Path(__file__).parents[2] / "infra" / "observability" / "grafana-dashboard.json"
METRIC = re.compile(r"\b(framewire_[a-z_]+|process_[a-z_]+)\b")


def exported_names() -> set[str]:
    m = service_metrics()
    # touch each labelled metric once so it appears in the exposition
    m.records_out.labels("x").inc(0)
    m.dead_lettered.labels("x", "y").inc(0)
    m.dropped.labels("x").set(0)
    m.batch_size.labels("x").observe(1)
    m.batch_seconds.labels("x").observe(0.1)
    m.end_to_end_seconds.observe(0.1)
    m.consumer_lag.labels("x", "0").set(0)
    m.camera_frames.labels("c").inc(0)
    m.broker_up.labels("x").set(1)
    m.model.info({"model": "m", "version": "1", "provider": "CPU"})
    names = set()
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_dashboard_queries_is_exported():
    queries = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
               for t in p["targets"]]
    wanted = {name for q in queries for name in METRIC.findall(q)}
    assert wanted, "the dashboard queries no metric"
    missing = wanted - exported_names()
    assert not missing, f"dashboard queries metrics nobody exports: {sorted(missing)}"
