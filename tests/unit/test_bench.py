"""The benchmark harness's pure parts: rates, percentiles, ratios, targets, JSON, docs, /proc."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.inputs import round_robin
from bench.machine import (
    EnergyMeter,
    busy_seconds_from_proc_stat,
    cpu_seconds_from_stat,
    memory_from_status,
    other_cores,
)
from bench.phases import cost
from bench.report import (
    DOCS_END,
    DOCS_START,
    broker_rows,
    draw_chart,
    markdown_section,
    replace_section,
    summary_rows,
)
from bench.run import phase_names, scale_steps, sites_for
from bench.stack import Sample, default_layout, free_ports, noise_cores, site_environment
from bench.stats import (
    BenchResult,
    BrokerRun,
    Latency,
    ScalePoint,
    broker_comparison,
    hop_percentiles_ms,
    per_thousand,
    percentiles_ms,
    rate_between,
    ratio,
    rss_growth_per_thousand,
)

REPO = Path(__file__).resolve().parents[2]


def make_brokers(transactions: bool | None = True) -> dict[str, BrokerRun]:
    return {
        "embedded": BrokerRun(
            "embedded", "at_least_once", fps=40.0, frames=600,
            cpu_s_per_1000={"inference": 34.0, "broker": 3.0, "total": 50.0}, startup_s=0.25,
            feed_fps=20.0, p50_ms=80.0, p99_ms=100.0,
            rss_mib={"ready": 50.0, "end": 850.0, "peak": 900.0},
            rss_mib_per_1000_frames=rss_growth_per_thousand(50.0, 850.0, 3200), partitions=4),
        "kafka": BrokerRun(
            "kafka", "at_least_once", fps=36.0, frames=540,
            cpu_s_per_1000={"inference": 34.0, "broker": 6.0, "total": 54.0}, startup_s=8.0,
            feed_fps=20.0, p50_ms=85.0, p99_ms=120.0,
            rss_mib={"ready": 400.0, "end": 420.0, "peak": 450.0},
            rss_mib_per_1000_frames=rss_growth_per_thousand(400.0, 420.0, 3000), partitions=12),
        "kafka_exactly_once": BrokerRun(
            "kafka", "exactly_once", fps=27.0, frames=400,
            cpu_s_per_1000={"inference": 34.0, "broker": 9.0, "total": 64.8}, startup_s=9.0,
            rss_mib={"ready": 400.0, "end": 430.0, "peak": 460.0}, partitions=12,
            transactions=transactions),
    }


def make_result(framewire_fps: float = 38.0, p99_ms: float = 150.0,
                scale: tuple[float, float] | None = (20.0, 37.0),
                brokers: dict[str, BrokerRun] | None = None) -> BenchResult:
    return BenchResult(
        started_at="2026-01-01T00:00:00+00:00", quick=True,
        machine={"cpu": "Test CPU", "usable_cores": 2, "logical_cpus": 2},
        config={"workers": 2, "layout": {"preprocess": 1, "inference": 2, "storage": 1}},
        bare_fps=40.0, bare_frame_ms=50.0, bare_cpu_s_per_1000=50.0,
        bare_steps_ms={"preprocess": 17.0, "inference": 33.0},
        framewire_fps=framewire_fps,
        latency=Latency(feed_fps=20.0, frames=300, p50_ms=80.0, p95_ms=120.0, p99_ms=p99_ms,
                        hops_ms={"ingested_at": {"p50_ms": 0.5, "p99_ms": 1.0}}),
        scale_out=[] if scale is None else [ScalePoint(1, scale[0]), ScalePoint(2, scale[1])],
        cpu_s_per_1000={"preprocess": 20.0, "inference": 34.0, "total": 56.0},
        bytes_per_frame={"frames.raw": 200_000.0, "total": 260_000.0},
        joules_per_1000={"bare": None, "framewire": None}, energy_note="not readable here",
        load_average={"start": [0.1, 0.2, 0.3], "end": [1.0, 1.0, 1.0]},
        brokers=brokers or {},
    )


def test_rate_between_counts_frames_after_the_first_completion_time() -> None:
    # batches of 4 frames stored at t = 10, 11, 12: 8 frames completed in 2 s after the first
    stamps = [10.0] * 4 + [11.0] * 4 + [12.0] * 4
    assert rate_between(stamps, 9.5, 12.5) == (4.0, 8)


def test_rate_between_ignores_completions_outside_the_window() -> None:
    stamps = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert rate_between(stamps, 2.0, 4.0) == (1.0, 2)


def test_rate_between_needs_two_distinct_completion_times() -> None:
    assert rate_between([5.0, 5.0, 5.0], 0.0, 10.0) is None
    assert rate_between([], 0.0, 10.0) is None


def test_percentiles_are_reported_in_milliseconds() -> None:
    found = percentiles_ms([i / 1000 for i in range(1, 101)])
    assert found == {"p50_ms": pytest.approx(50.5), "p95_ms": pytest.approx(95.05),
                     "p99_ms": pytest.approx(99.01)}


def test_percentiles_of_no_latency_say_the_phase_stored_nothing() -> None:
    with pytest.raises(ValueError, match="no frame was stored"):
        percentiles_ms([])


def test_hop_percentiles_name_each_hop_after_the_time_it_ends_at() -> None:
    timelines = [(0.0, 0.001, 0.101, 0.201), (1.0, 1.001, 1.101, 1.301)]
    hops = hop_percentiles_ms(timelines, ("captured", "ingested", "preprocessed", "stored"))
    assert list(hops) == ["ingested", "preprocessed", "stored"]
    assert hops["preprocessed"]["p50_ms"] == pytest.approx(100.0)
    assert hops["stored"]["p99_ms"] == pytest.approx(199.0, abs=0.1)


def test_costs_per_thousand_frames_and_ratios_tolerate_missing_values() -> None:
    assert per_thousand(3.0, 60) == 50.0
    assert per_thousand(3.0, 0) is None
    assert ratio(30.0, 40.0) == 0.75
    assert ratio(None, 40.0) is None
    assert ratio(30.0, 0.0) is None


def test_headline_ratios_come_from_the_measurements() -> None:
    result = make_result(framewire_fps=38.0, p99_ms=150.0, scale=(20.0, 37.0))
    assert result.throughput_ratio == 0.95
    assert result.p99_over_bare == 3.0
    assert result.scale_out_ratio == 1.85
    assert result.latency_load == round(20.0 / 38.0, 3)
    assert result.cpu_ratio == round(50.0 / 56.0, 3)


def test_targets_pass_at_their_limits_and_fail_beyond_them() -> None:
    met = {t.name: t.passed for t in make_result(38.0, 150.0, (20.0, 36.0)).targets()}
    assert all(met.values())
    missed = {t.name: t.passed for t in make_result(30.0, 151.0, (20.0, 35.9)).targets()}
    assert missed == {
        "throughput framewire/bare": False,
        "ahead of naive Quix Streams (framewire/bare)": False,
        "p99 latency at 50% load / bare per-frame time": False,
        "scale-out 2 vs 1 inference replicas": False,
    }


def test_a_target_not_measured_is_neither_passed_nor_failed() -> None:
    (scale,) = [t for t in make_result(scale=None).targets() if t.name.startswith("scale")]
    assert scale.passed is None
    assert scale.line().startswith("n/a")


def test_json_leads_with_the_headline_keys_and_is_serialisable() -> None:
    data = json.loads(json.dumps(make_result().to_json()))
    headline = ["version", "bare_fps", "framewire_fps", "throughput_ratio", "cpu_ratio", "p50_ms",
                "p95_ms",
                "p99_ms", "bare_frame_ms", "p99_over_bare", "scale_out_ratio", "latency_load",
                "machine", "targets", "broker_comparison"]
    assert list(data)[:len(headline)] == headline
    assert data["throughput_ratio"] == 0.95
    assert data["machine"]["cpu"] == "Test CPU"
    assert data["latency"]["hops_ms"]["ingested_at"]["p50_ms"] == 0.5
    assert data["scale_out"][1] == {"replicas": 2, "fps": 37.0, "cpu_s_per_1000": {},
                                    "other_cores": None}
    assert {t["name"] for t in data["targets"]} >= {"throughput framewire/bare"}


def test_summary_rows_carry_both_ratios_and_the_scale_out() -> None:
    rows = dict(summary_rows(make_result()))
    assert rows["**framewire / bare**"] == "0.95x"
    assert rows["**p99 / bare per-frame time**"] == "3.00x"
    assert rows["**scale-out 2 / 1 inference**"] == "1.85x"
    assert rows["joules per 1,000 frames"] == "not readable here"


def test_docs_section_is_replaced_between_its_markers() -> None:
    text = f"# Benchmarks\nintro\n{DOCS_START}\nold table\n{DOCS_END}\nafter\n"
    new = replace_section(text, f"{DOCS_START}\nnew table\n{DOCS_END}")
    assert new == f"# Benchmarks\nintro\n{DOCS_START}\nnew table\n{DOCS_END}\nafter\n"


def test_docs_section_is_appended_when_the_page_has_none() -> None:
    new = replace_section("# Benchmarks\n", f"{DOCS_START}\ntable\n{DOCS_END}")
    assert new == f"# Benchmarks\n\n{DOCS_START}\ntable\n{DOCS_END}\n"


def test_cpu_seconds_are_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    line = "4242 (python (bench) x) " + " ".join(fields)
    assert cpu_seconds_from_stat(line, 100) == 3.0


def test_cpu_seconds_refuse_a_line_that_is_not_proc_stat() -> None:
    with pytest.raises(ValueError, match="not a /proc/PID/stat"):
        cpu_seconds_from_stat("hello (x) S 1 2", 100)


def test_cost_divides_each_services_cpu_by_the_frames_stored_between_samples() -> None:
    before = Sample(0.0, 100, {"preprocess": 10.0, "inference": 20.0}, None)
    after = Sample(10.0, 300, {"preprocess": 14.0, "inference": 27.0}, None)
    frames, per = cost(before, after)
    assert frames == 200
    assert per == {"preprocess": 20.0, "inference": 35.0, "total": 55.0}


def test_busy_seconds_leave_out_idle_and_iowait() -> None:
    text = "cpu  100 20 30 1000 500 5 5 40 0 0\ncpu0 50 10 15 500 250 2 2 20 0 0\n"
    assert busy_seconds_from_proc_stat(text, 100) == 2.0


def test_other_cores_are_the_machines_busy_time_less_the_benchmarks() -> None:
    assert other_cores(100.0, 130.0, 20.0, 10.0) == 1.0
    assert other_cores(100.0, 110.0, 12.0, 10.0) == 0.0  # clock granularity: never below 0
    assert other_cores(None, 110.0, 5.0, 10.0) is None


def test_noise_counts_the_stack_and_the_measuring_process_as_ours() -> None:
    before = Sample(0.0, 0, {"inference": 10.0}, None, busy_s=100.0, bench_s=1.0)
    after = Sample(10.0, 50, {"inference": 25.0}, None, busy_s=125.0, bench_s=2.0)
    assert noise_cores(before, after) == 0.9


def _rapl_zone(root: Path, name: str, energy_uj: int, range_uj: int) -> None:
    zone = root / name
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")


def test_energy_counts_package_zones_only_and_survives_a_counter_wrap(tmp_path: Path) -> None:
    meter = EnergyMeter(tmp_path)
    _rapl_zone(tmp_path, "intel-rapl:0", 9_000_000, 10_000_000)
    _rapl_zone(tmp_path, "intel-rapl:0:0", 1, 10_000_000)  # a sub-zone: already in its package
    before = meter.read_joules()
    _rapl_zone(tmp_path, "intel-rapl:0", 1_000_000, 10_000_000)  # wrapped: +2 J
    assert meter.joules_between(before, meter.read_joules()) == pytest.approx(2.0)


def test_energy_is_not_readable_without_rapl(tmp_path: Path) -> None:
    meter = EnergyMeter(tmp_path / "missing")
    assert meter.read_joules() is None
    assert meter.joules_between(None, None) is None


def test_default_layout_gives_one_inference_replica_per_core() -> None:
    assert default_layout(2) == {"preprocess": 1, "inference": 2, "storage": 1}
    assert default_layout(8) == {"preprocess": 2, "inference": 8, "storage": 1}
    assert default_layout(64, partitions=12)["inference"] == 12


def test_scale_out_steps_double_up_to_the_cores() -> None:
    assert scale_steps(1) == [1, 2]
    assert scale_steps(2) == [1, 2]
    assert scale_steps(6) == [1, 2, 4, 6]
    assert scale_steps(8) == [1, 2, 4, 8]


def test_the_feed_takes_one_frame_from_each_camera_in_turn() -> None:
    frames = {"b": [b"b0", b"b1"], "a": [b"a0"]}
    assert [round_robin(frames, n) for n in range(4)] == [
        ("a", b"a0"), ("b", b"b0"), ("a", b"a0"), ("b", b"b1")]


def test_chart_is_written_as_png(tmp_path: Path) -> None:
    path = draw_chart(make_result(), [50.0, 80.0, 120.0, 149.0], tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the brokers side by side (--broker kafka), results and docs -----------------------------

COMPARISON_KEYS = ["fps", "p99_ms", "broker_cpu_ms_per_frame", "cpu_ms_per_frame",
                   "broker_rss_mib_peak", "broker_rss_mib_per_1000_frames", "startup_s",
                   "exactly_once"]


def test_broker_comparison_divides_kafka_by_the_embedded_broker() -> None:
    cmp = broker_comparison(make_brokers())
    assert list(cmp) == COMPARISON_KEYS
    assert cmp["fps"] == {"measure": "full speed, frames/s", "embedded": 40.0, "kafka": 36.0,
                          "kafka_over_embedded": 0.9}
    assert cmp["p99_ms"]["kafka_over_embedded"] == 1.2
    assert cmp["broker_cpu_ms_per_frame"]["kafka_over_embedded"] == 2.0
    assert cmp["cpu_ms_per_frame"]["kafka_over_embedded"] == 1.08
    assert cmp["broker_rss_mib_peak"]["kafka_over_embedded"] == 0.5
    assert cmp["startup_s"]["kafka_over_embedded"] == 32.0


def test_exactly_once_is_compared_with_at_least_once_on_kafka() -> None:
    eos = broker_comparison(make_brokers())["exactly_once"]
    assert eos == {"fps": 27.0, "cpu_ms_per_frame": 64.8, "broker_cpu_ms_per_frame": 9.0,
                   "fps_ratio": 0.75, "cpu_ratio": 1.2, "transactions": True}


def test_broker_comparison_keeps_its_keys_when_only_the_embedded_broker_ran() -> None:
    cmp = broker_comparison({"embedded": make_brokers()["embedded"]})
    assert list(cmp) == COMPARISON_KEYS
    assert cmp["fps"]["embedded"] == 40.0
    assert cmp["fps"]["kafka"] is None and cmp["fps"]["kafka_over_embedded"] is None
    assert set(cmp["exactly_once"].values()) == {None}
    assert list(broker_comparison({})["fps"]) == ["measure", "embedded", "kafka",
                                                  "kafka_over_embedded"]


def test_rss_growth_is_mib_per_thousand_frames_carried() -> None:
    assert rss_growth_per_thousand(50.0, 850.0, 3200) == 250.0
    assert rss_growth_per_thousand(400.0, 380.0, 1000) == -20.0  # a Java heap collected
    assert rss_growth_per_thousand(None, 380.0, 1000) is None
    assert rss_growth_per_thousand(1.0, 2.0, 0) is None


def test_memory_is_read_from_proc_status_in_mib() -> None:
    text = "Name:\tjava\nVmPeak:\t 9000 kB\nVmHWM:\t  524288 kB\nVmRSS:\t  262144 kB\n"
    assert memory_from_status(text) == (256.0, 512.0)
    with pytest.raises(ValueError, match="not the text of /proc/PID/status"):
        memory_from_status("Name:\tzombie\n")


def test_broker_table_has_a_row_per_measure_and_the_exactly_once_cost() -> None:
    rows = {r[0]: r[1:] for r in broker_rows(make_result(brokers=make_brokers()))}
    assert rows["full speed, frames/s"] == ("40.0", "36.0", "0.90x")
    assert rows["start-up, s"] == ("0.25", "8.00", "32.00x")
    assert rows["broker RSS growth, MiB per 1,000 frames"] == ("250.0", "6.7", "0.03x")
    assert rows["Kafka exactly_once, full speed frames/s"] == (
        "", "27.0", "0.75x of at_least_once")
    assert rows["Kafka exactly_once, CPU-ms per frame (broker)"] == (
        "", "64.8 (9.00)", "1.20x of at_least_once (transactions made)")
    assert rows["data topic partitions"] == ("4", "12", "")


def test_broker_table_says_when_exactly_once_made_no_transaction() -> None:
    rows = {r[0]: r[1:] for r in broker_rows(make_result(brokers=make_brokers(False)))}
    assert "no transaction made" in rows["Kafka exactly_once, CPU-ms per frame (broker)"][2]


def test_without_kafka_there_is_no_broker_table_but_the_embedded_broker_row() -> None:
    result = make_result(brokers={"embedded": make_brokers()["embedded"]})
    assert broker_rows(result) == []
    assert dict(summary_rows(result))["embedded broker"].startswith("start-up 0.25 s; RSS 50")
    assert "| measure | embedded (Tansu)" not in markdown_section(result)


def test_docs_section_carries_the_broker_table_with_kafka() -> None:
    section = markdown_section(make_result(brokers=make_brokers()))
    assert "`framewire bench --quick --broker kafka`" in section
    assert "| full speed, frames/s | 40.0 | 36.0 | 0.90x |" in section


def test_json_carries_each_broker_site_and_the_comparison() -> None:
    data = json.loads(json.dumps(make_result(brokers=make_brokers()).to_json()))
    assert data["version"] == 2
    assert list(data["brokers"]) == ["embedded", "kafka", "kafka_exactly_once"]
    assert set(data["brokers"]["kafka"]) == {
        "broker", "delivery", "fps", "frames", "cpu_s_per_1000", "startup_s", "feed_fps",
        "p50_ms", "p99_ms", "rss_mib", "rss_mib_per_1000_frames", "frames_stored",
        "partitions", "transactions", "dead_lettered", "other_cores"}
    assert data["brokers"]["kafka"]["rss_mib"] == {"ready": 400.0, "end": 420.0, "peak": 450.0}
    assert data["broker_comparison"]["exactly_once"]["fps_ratio"] == 0.75


def test_kafka_runs_the_embedded_broker_beside_it() -> None:
    assert sites_for("embedded") == ["embedded"]
    assert sites_for("kafka") == ["embedded", "kafka", "kafka_exactly_once"]
    with pytest.raises(ValueError, match="embedded or kafka"):
        sites_for("redpanda")
    names = phase_names(sites_for("kafka"))
    assert names[2:5] == ["Framewire: start", "Framewire: latency at 50 %",
                          "Framewire: full speed"]
    assert "Kafka exactly_once: full speed" in names
    assert "Kafka exactly_once: latency at 50 %" not in names  # full speed only
    assert names[-2:] == ["scale-out: inference replicas", "analytics: 8 cameras, demo rate"]


def test_each_site_sets_its_broker_and_delivery(tmp_path: Path) -> None:
    embedded = site_environment(tmp_path, "127.0.0.1:1", embedded=True)
    assert embedded["FRAMEWIRE_BROKER"] == "embedded"
    assert embedded["FRAMEWIRE_DELIVERY"] == "at_least_once"
    assert "FRAMEWIRE_BROKER_NODES" not in embedded
    kafka = site_environment(tmp_path, "127.0.0.1:1", embedded=True, broker="kafka",
                             delivery="exactly_once")
    assert kafka["FRAMEWIRE_BROKER_NODES"] == "1"  # one node, as framewire run starts it
    assert kafka["FRAMEWIRE_DELIVERY"] == "exactly_once"


def test_free_ports_are_consecutive_and_unused() -> None:
    import socket

    first = free_ports(2)
    for port in (first, first + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def _run_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> list[Path]:
    """``framewire bench`` with the measurements replaced; the docs path it would write."""
    from typer.testing import CliRunner

    import bench.report
    import bench.run
    from framewire.cli import app

    def fake_run(options: bench.run.Options, console: object) -> tuple[BenchResult, list[float]]:
        assert options.broker == ("kafka" if "--broker" in args else "embedded")
        return make_result(brokers=make_brokers()), [50.0, 80.0, 120.0]

    written: list[Path] = []
    monkeypatch.setattr(bench.run, "run_benchmark", fake_run)
    monkeypatch.setattr(bench.report, "update_docs", lambda result, path: written.append(path))
    outcome = CliRunner().invoke(app, ["bench", "--quick", "--results-dir", str(tmp_path),
                                       *args])
    assert outcome.exit_code == 0, outcome.output
    return written


def test_bench_writes_results_only_under_its_results_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = REPO / "docs" / "benchmarks.md"
    before = docs.read_bytes()
    assert _run_cli(monkeypatch, tmp_path, "--broker", "kafka") == []
    assert docs.read_bytes() == before
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".png"]
    (saved,) = tmp_path.glob("*.json")
    assert saved.name.endswith("-quick-kafka.json")
    assert list(json.loads(saved.read_text())["broker_comparison"]) == COMPARISON_KEYS


def test_bench_updates_the_docs_only_when_asked(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    assert _run_cli(monkeypatch, tmp_path, "--write-docs") == [REPO / "docs" / "benchmarks.md"]


def test_bench_refuses_an_unknown_broker() -> None:
    from typer.testing import CliRunner

    from framewire.cli import app

    outcome = CliRunner().invoke(app, ["bench", "--broker", "redpanda"])
    assert outcome.exit_code != 0
    assert "give embedded or kafka" in str(outcome.exception or outcome.output)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs the git checkout")
def test_default_results_are_git_ignored() -> None:
    for name in ("bench-20260101T000000-quick-kafka.json",
                 "bench-20260101T000000-quick-kafka.png", "gpu-20260101T000000.json"):
        done = subprocess.run(["git", "check-ignore", "-q", f"bench/results/{name}"],
                              cwd=REPO, check=False)
        assert done.returncode == 0, f"bench/results/{name} is not git-ignored"
