"""What a benchmark run leaves: tables on the terminal, a JSON file and a PNG chart under
``bench/results/`` (git-ignored), and docs/benchmarks.md only when asked (``--write-docs``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from bench.machine import describe
from bench.stats import (
    LATENCY_TARGET,
    AnalyticsRun,
    BenchResult,
    BrokerRun,
    broker_comparison,
)

DOCS_START = "<!-- bench:latest:start -->"
DOCS_END = "<!-- bench:latest:end -->"


def _num(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def _memory(run: BrokerRun) -> str:
    rss = run.rss_mib
    return (f"RSS {_num(rss.get('ready'), 0)} MiB after start, {_num(rss.get('end'), 0)} at the "
            f"end, peak {_num(rss.get('peak'), 0)}; "
            f"{_num(run.rss_mib_per_1000_frames, 1)} MiB more per 1,000 frames")


def summary_rows(result: BenchResult) -> list[tuple[str, str]]:
    """(measure, value) lines shared by the terminal table and docs/benchmarks.md."""
    cfg = result.config
    layout = ", ".join(f"{k}={v}" for k, v in cfg.get("layout", {}).items())
    lat = result.latency
    rows = [
        ("bare loop", f"{_num(result.bare_fps)} frames/s ({cfg.get('workers')} workers), "
                      f"{_num(result.bare_frame_ms)} ms per frame"),
        ("Framewire, full speed", f"{_num(result.framewire_fps)} frames/s ({layout})"),
        ("**framewire / bare**", _num(result.throughput_ratio, 2, "x")),
        ("framewire / bare by CPU-seconds per frame", _num(result.cpu_ratio, 2, "x")
         + " (the same ratio with nothing else running; robust to other load)"),
        ("latency at 50 % load", f"p50 {_num(lat.p50_ms, 0)} ms, p95 {_num(lat.p95_ms, 0)} ms, "
                                 f"p99 {_num(lat.p99_ms, 0)} ms (fed {_num(lat.feed_fps)} "
                                 f"frames/s = {_num(_pct(result.latency_load), 0)} % of "
                                 f"Framewire's full speed; {lat.frames} frames)"),
        ("**p99 / bare per-frame time**", _num(result.p99_over_bare, 2, "x")),
    ]
    if lat.hops_ms:
        rows.append(("latency by hop, p50 / p99 ms", ", ".join(
            f"→{hop.removesuffix('_at')} {_num(v.get('p50_ms'), 0)}/{_num(v.get('p99_ms'), 0)}"
            for hop, v in lat.hops_ms.items())))
    for point in result.scale_out:
        rows.append((f"inference x{point.replicas} (inference-bound)",
                     f"{_num(point.fps)} frames/s"))
    rows.append(("**scale-out 2 / 1 inference**", _num(result.scale_out_ratio, 2, "x")))
    rows += analytics_rows(result.analytics)
    cpu = result.cpu_s_per_1000
    services = ", ".join(f"{k} {_num(v, 1)}" for k, v in cpu.items() if k != "total")
    embedded = result.brokers.get("embedded")
    if embedded is not None:
        rows.append(("embedded broker", f"start-up {_num(embedded.startup_s, 2)} s; "
                                        f"{_memory(embedded)}"))
    rows += [
        ("CPU-s per 1,000 frames", f"bare {_num(result.bare_cpu_s_per_1000)}; Framewire "
                                   f"{_num(cpu.get('total'))} ({services})"),
        ("bytes per frame (into the broker)",
         ", ".join(f"{k} {v / 1024:,.1f} KiB" for k, v in result.bytes_per_frame.items())),
        ("joules per 1,000 frames", result.energy_note if not any(
            v is not None for v in result.joules_per_1000.values()) else ", ".join(
            f"{k} {_num(v, 0)}" for k, v in result.joules_per_1000.items())),
        ("bare loop, ms per frame by step",
         ", ".join(f"{k} {v:.1f}" for k, v in result.bare_steps_ms.items())),
        ("other processes (cores busy, noise)", ", ".join(
            f"{k} {_num(v, 2)}" for k, v in result.other_cores.items()) or "n/a"),
        ("load average (start / end)", f"{result.load_average.get('start')} / "
                                       f"{result.load_average.get('end')}"),
    ]
    return rows


def analytics_rows(run: AnalyticsRun | None) -> list[tuple[str, str]]:
    """The analytics phase's lines (none when it did not run)."""
    if run is None:
        return []
    lag, worker = run.lag_ms, run.emitted_ms
    return [
        (f"analytics, {run.cameras} cameras at {_num(run.fps_per_camera, 0)} frames/s",
         f"lag capture → on events p50 {_num(lag.get('p50_ms'), 0)} ms, p95 "
         f"{_num(lag.get('p95_ms'), 0)} ms (of which in the worker p50 "
         f"{_num(worker.get('p50_ms'), 0)}, p95 {_num(worker.get('p95_ms'), 0)}; "
         f"{run.lag_events} events); group lag max {_num(run.group_lag_max, 0)} records, "
         f"{_num(run.group_lag_end, 0)} when the feed ended, 0 after {_num(run.drain_s, 1)} s"),
        ("analytics CPU-s per 1,000 detections records",
         f"service {_num(run.cpu_s_per_1000, 2)} (broker {_num(run.broker_cpu_s_per_1000, 2)});"
         f" bare core {_num(run.bare_cpu_s_per_1000, 2)} ({run.records} records, "
         f"{_num(run.boxes_per_record, 1)} boxes each)"),
        ("**analytics service / bare, CPU per record**", _num(run.cpu_ratio, 2, "x")),
    ]


BROKER_COLUMNS = ("measure", "embedded (Tansu)", "Apache Kafka (1 node)", "Kafka / embedded")


def broker_rows(result: BenchResult) -> list[tuple[str, str, str, str]]:
    """The embedded broker beside Apache Kafka (``--broker kafka``), one row per measure,
    then exactly_once against at_least_once on Kafka; empty when Kafka was not measured."""
    if "kafka" not in result.brokers:
        return []
    cmp = broker_comparison(result.brokers)
    digits = {"fps": 1, "p99_ms": 0, "broker_cpu_ms_per_frame": 2, "cpu_ms_per_frame": 1,
              "broker_rss_mib_peak": 0, "broker_rss_mib_per_1000_frames": 1, "startup_s": 2}
    rows = [(cmp[key]["measure"], _num(cmp[key]["embedded"], n), _num(cmp[key]["kafka"], n),
             _num(cmp[key]["kafka_over_embedded"], 2, "x")) for key, n in digits.items()]
    eos, kafka = cmp["exactly_once"], result.brokers["kafka"]
    if "kafka_exactly_once" in result.brokers:
        made = {True: "transactions made", False: "no transaction made: the setting only",
                None: "transactions not checked"}[eos["transactions"]]
        rows += [
            ("Kafka exactly_once, full speed frames/s", "", _num(eos["fps"], 1),
             f"{_num(eos['fps_ratio'], 2, 'x')} of at_least_once"),
            ("Kafka exactly_once, CPU-ms per frame (broker)", "",
             f"{_num(eos['cpu_ms_per_frame'], 1)} ({_num(eos['broker_cpu_ms_per_frame'], 2)})",
             f"{_num(eos['cpu_ratio'], 2, 'x')} of at_least_once ({made})"),
        ]
    rows.append(("data topic partitions", str(result.brokers["embedded"].partitions)
                 if "embedded" in result.brokers else "n/a", str(kafka.partitions), ""))
    return rows


def print_table(result: BenchResult, console: Console) -> None:
    """The summary table, the brokers' table (``--broker kafka``) and the targets' lines."""
    table = Table(title=f"framewire bench{' --quick' if result.quick else ''}"
                        f"{' --broker kafka' if 'kafka' in result.brokers else ''} — "
                        f"{describe(result.machine)}", title_justify="left")
    table.add_column("measure")
    table.add_column("value")
    for measure, value in summary_rows(result):
        bold = measure.startswith("**")
        table.add_row(measure.strip("*"), value, style="bold" if bold else None)
    console.print(table)
    brokers = broker_rows(result)
    if brokers:
        compared = Table(title="brokers: the same pipeline on each (full speed; p99 at the "
                               "same 50 % load)", title_justify="left")
        for column in BROKER_COLUMNS:
            compared.add_column(column)
        for row in brokers:
            compared.add_row(*row)
        console.print(compared)
    for target in result.targets():
        colour = {True: "green", False: "red", None: "yellow"}[target.passed]
        console.print(f"[{colour}]{target.line()}[/]")
    for note in result.notes:
        console.print(f"[dim]note: {note}[/]")


def write_json(result: BenchResult, folder: Path) -> Path:
    """``bench/results/bench-<time>.json``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = result.started_at.replace(":", "").replace("-", "")[:15]
    kafka = "-kafka" if "kafka" in result.brokers else ""
    path = folder / f"bench-{stamp}{'-quick' if result.quick else ''}{kafka}.json"
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path


def markdown_section(result: BenchResult) -> str:
    """The generated part of docs/benchmarks.md: machine, table, targets."""
    machine = result.machine
    brokers = broker_rows(result)
    flags = (" --quick" if result.quick else "") + (" --broker kafka" if brokers else "")
    compared = [
        "",
        "| " + " | ".join(BROKER_COLUMNS) + " |",
        "|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in brokers],
    ] if brokers else []
    lines = [
        DOCS_START,
        f"Latest run: {result.started_at} (`framewire bench{flags}`"
        f", commit {machine.get('commit')}{' + local changes' if machine.get('dirty') else ''},"
        f" {result.duration_s:.0f} s).",
        "",
        f"Machine: {describe(machine)}; RAPL {machine.get('rapl')}.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {m} | {v} |" for m, v in summary_rows(result)],
        *compared,
        "",
        *[f"- {t.line()}" for t in result.targets()],
        *[f"- note: {n}" for n in result.notes],
        DOCS_END,
    ]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced (appended when there is none)."""
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start == -1 or end == -1 or end < start:
        return text.rstrip("\n") + "\n\n" + section + "\n"
    return text[:start] + section + text[end + len(DOCS_END):]


def update_docs(result: BenchResult, path: Path) -> None:
    """Put the latest run's machine and table into docs/benchmarks.md (``--write-docs``)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_section(text, markdown_section(result)))


# -- the chart (drawn with OpenCV, a dependency already; no plotting library needed) ---------

_W, _H, _PAD = 1200, 520, 60
_INK, _GRID, _BAR, _ACCENT = (40, 40, 40), (220, 220, 220), (180, 120, 40), (40, 40, 200)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, at: tuple[int, int], scale: float = 0.45,
          colour: tuple[int, int, int] = _INK) -> None:
    cv2.putText(img, text, at, _FONT, scale, colour, 1, cv2.LINE_AA)


def draw_chart(result: BenchResult, latencies_ms: Sequence[float], path: Path) -> Path:
    """Throughput by configuration (left) and the latency distribution at 50 % load (right)."""
    img = np.full((_H, _W, 3), 255, np.uint8)
    half = _W // 2
    _text(img, "frames/s by configuration", (_PAD, 30), 0.6)
    bars = [("bare loop", result.bare_fps), ("Framewire", result.framewire_fps)]
    labels = {"kafka": "on Kafka", "kafka_exactly_once": "Kafka EOS"}
    bars += [(label, result.brokers[key].fps) for key, label in labels.items()
             if key in result.brokers]
    bars += [(f"inference x{p.replicas}*", p.fps) for p in result.scale_out]
    top = max(v for _, v in bars) * 1.15 or 1.0
    x0, y0, x1, y1 = _PAD + 10, 60, half - 30, _H - _PAD
    slot = (x1 - x0) / len(bars)
    for i, (label, value) in enumerate(bars):
        left = int(x0 + i * slot + slot * 0.15)
        right = int(x0 + (i + 1) * slot - slot * 0.15)
        height = int((y1 - y0) * value / top)
        cv2.rectangle(img, (left, y1 - height), (right, y1), _BAR, -1)
        _text(img, f"{value:.1f}", (left, y1 - height - 8))
        _text(img, label, (left, y1 + 20), 0.4)
    cv2.line(img, (x0, y1), (x1, y1), _INK, 1)
    _text(img, "* inference-bound: frames.ready pre-filled", (x0, _H - 12), 0.4)

    _text(img, "end-to-end latency at 50% load (stored - captured)", (half + 20, 30), 0.6)
    lx0, ly0, lx1, ly1 = half + 40, 60, _W - 30, _H - _PAD
    values = np.asarray(latencies_ms, dtype=np.float64)
    limit = LATENCY_TARGET * result.bare_frame_ms
    hi = max(float(values.max()) if values.size else 1.0, limit) * 1.05
    counts, edges = np.histogram(values, bins=40, range=(0.0, hi))
    for y in range(ly0, ly1, 40):
        cv2.line(img, (lx0, y), (lx1, y), _GRID, 1)
    peak = max(int(counts.max()) if counts.size else 1, 1)
    for count, lo_edge, hi_edge in zip(counts, edges[:-1], edges[1:], strict=True):
        left = int(lx0 + (lx1 - lx0) * lo_edge / hi)
        right = int(lx0 + (lx1 - lx0) * hi_edge / hi) - 1
        cv2.rectangle(img, (left, ly1 - int((ly1 - ly0) * count / peak)), (right, ly1), _BAR, -1)
    cv2.line(img, (lx0, ly1), (lx1, ly1), _INK, 1)
    for tick in np.linspace(0, hi, 6):
        x = int(lx0 + (lx1 - lx0) * tick / hi)
        cv2.line(img, (x, ly1), (x, ly1 + 5), _INK, 1)
        _text(img, f"{tick:.0f} ms", (min(x - 15, _W - 60), ly1 + 20), 0.4)
    marks = [("p50", result.latency.p50_ms), ("p95", result.latency.p95_ms),
             ("p99", result.latency.p99_ms), ("target", limit)]
    for i, (name, value) in enumerate(marks):
        x = int(lx0 + (lx1 - lx0) * value / hi)
        colour = _ACCENT if name == "target" else _INK
        cv2.line(img, (x, ly0), (x, ly1), colour, 1)
        _text(img, f"{name} {value:.0f} ms", (x + 4, ly0 + 15 + 16 * i), 0.4, colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write the chart to {path}")
    return path
