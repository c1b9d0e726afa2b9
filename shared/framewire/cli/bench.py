"""``framewire bench``: Framewire against a bare loop on this machine (from a source checkout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from framewire.cli import app, parse_replicas
from framewire.config import load_settings
from framewire.errors import ConfigError

# shared/framewire/cli/bench.py -> the repository root, where the bench/ package lives
_REPO = Path(__file__).resolve().parents[3]


def _bench_package() -> Path:
    """Make the checkout's ``bench`` package importable; it is not part of the installed one."""
    if not (_REPO / "bench" / "run.py").is_file():
        raise ConfigError(
            f"framewire bench needs the source checkout's bench/ folder, not found under "
            f"{_REPO}; run it from a clone installed with `make install` (pip install -e .)"
        )
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    return _REPO


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(
        "--quick", help="Short phases: under three minutes (about six with --broker kafka).")]
        = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object on stdout (the table goes to stderr).")] = False,
    replicas: Annotated[str, typer.Option(
        help="Framewire's layout, e.g. preprocess=1,inference=2,storage=1 "
             "(default: one inference replica per core, see docs/benchmarks.md).")] = "",
    workers: Annotated[int | None, typer.Option(
        min=1, help="Bare-loop worker processes (default: one per usable core).")] = None,
    broker: Annotated[str, typer.Option(
        "--broker", help="embedded: Framewire on the embedded broker (Tansu). kafka: also on "
                         "a single Apache Kafka node, as framewire run --broker kafka starts "
                         "it, in the same run, with an exactly_once phase; prints the two "
                         "side by side.")] = "embedded",
    write_docs: Annotated[bool, typer.Option(
        "--write-docs/--no-docs", help="Also write the machine and tables into "
                                       "docs/benchmarks.md (a tracked file; default: only "
                                       "bench/results/).")] = False,
    results_dir: Annotated[Path | None, typer.Option(
        "--results-dir", help="Folder for the JSON and the chart (default: bench/results/, "
                              "git-ignored).")] = None,
    gpu: Annotated[bool, typer.Option(
        "--gpu", help="Instead: Framewire's inference on the GPU against raw ONNX Runtime "
                      "batched on the same card (needs onnxruntime-gpu: make bench-gpu "
                      "installs it).")]
        = False,
    gpu_batch: Annotated[int, typer.Option(
        min=1, max=256, help="With --gpu: frames per micro-batch.")] = 32,
    gpu_replicas: Annotated[str, typer.Option(
        help="With --gpu: inference replica counts to measure, e.g. 1,2,4 (default: 1, 2, "
             "4, 8 up to half the cores).")] = "",
) -> None:
    """Measure Framewire against a bare loop on this machine: throughput, latency, scale-out,
    and the analytics worker's lag and CPU per 1,000 detections (8 demo-rate cameras).

    Results go to bench/results/ (JSON, PNG; git-ignored); --write-docs updates the docs.

    Example: framewire bench --quick

    Example: framewire bench --broker kafka --quick   (embedded broker and Apache Kafka)

    Example: FRAMEWIRE_PREPROCESS__PIXEL_FORMAT=bgr8 framewire bench --quick --json

    Example: framewire bench --gpu --gpu-replicas 2,4,8   (needs onnxruntime-gpu: make bench-gpu)
    """
    repo = _bench_package()
    if gpu:
        _gpu_bench(repo, quick, gpu_replicas, gpu_batch, json_out)
        return
    from bench.report import draw_chart, print_table, update_docs, write_json
    from bench.run import Options, run_benchmark

    if broker not in ("embedded", "kafka"):
        raise ConfigError(f"--broker {broker!r}: give embedded or kafka")
    layout = parse_replicas(load_settings(), replicas)
    if "ingest" in layout:
        raise ConfigError("--replicas: the benchmark feeds the cameras itself; give "
                          "preprocess, inference or storage")
    progress_console = Console(stderr=True)
    table_console = Console(stderr=True) if json_out else Console()
    options = Options(quick=quick, workers=workers, layout=layout, broker=broker,
                      docs=repo / "docs" / "benchmarks.md" if write_docs else None)
    if results_dir is not None:
        options.results_dir = results_dir
    result, latencies_ms = run_benchmark(options, progress_console)
    print_table(result, table_console)
    saved = write_json(result, options.results_dir)
    chart = draw_chart(result, latencies_ms, saved.with_suffix(".png"))
    if options.docs is not None:
        update_docs(result, options.docs)
    progress_console.print(f"results: {saved}, chart: {chart}"
                           + (f", table in {options.docs}" if options.docs else ""))
    if json_out:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")


def _gpu_bench(repo: Path, quick: bool, replicas: str, batch: int, json_out: bool) -> None:
    import onnxruntime

    from bench.gpu import TARGET, run_gpu_benchmark
    from framewire.procutil import usable_cores

    accelerators = [p for p in onnxruntime.get_available_providers()
                    if p != "CPUExecutionProvider"]
    if not accelerators:
        raise ConfigError("framewire bench --gpu: this onnxruntime has no GPU provider "
                          f"({onnxruntime.get_available_providers()}); install the GPU build "
                          "with `pip install .[gpu]` on a machine with an NVIDIA GPU")
    try:
        # each replica wants a core or two of its own for fetching, JPEG decoding and Avro
        steps = ([int(n) for n in replicas.split(",") if n.strip()] if replicas else
                 [n for n in (1, 2, 4, 8) if n <= max(1, usable_cores() // 2)])
    except ValueError:
        raise ConfigError(f"--gpu-replicas {replicas!r}: give replica counts such as 1,2,4") \
            from None
    console = Console(stderr=True)
    result = run_gpu_benchmark(repo, repo / "bench" / "results", seconds=4.0 if quick else 10.0,
                               batch=batch, replicas=steps, log=console.print)
    ratio = result.get("service_over_raw")
    console.print(f"GPU {result['machine'].get('gpu')}: raw ONNX Runtime best "
                  f"{result.get('raw', {}).get('best_fps')} frames/s; Framewire inference "
                  f"{result.get('service')}; service/raw {ratio} "
                  f"({'PASS' if result.get('pass') else 'FAIL'}, target >= {TARGET})")
    console.print(f"results: {result['results_file']}")
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
