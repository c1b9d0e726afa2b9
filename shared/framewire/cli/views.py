"""``framewire results``, ``deadletters`` and ``status``: what the pipeline did."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from framewire.cli import app, console, print_json, settings_for

if TYPE_CHECKING:
    from framewire.ops.status import ServiceStatus


@app.command()
def results(
    camera: Annotated[str | None, typer.Option(help="Only this camera.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N results.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List stored results, newest first, with their detections (boxes in frame pixels).

    Example: framewire results --camera cam-7 --limit 5 --json
    """
    from framewire.store.db import open_database

    settings = settings_for()
    db = open_database(settings.resolved_database_url)
    try:
        rows = db.query_results(camera_id=camera, limit=limit)
    finally:
        db.close()
    if as_json:
        print_json([r.as_flat_dict() for r in rows])
        return
    table = Table("frame id", "camera", "seq", "captured", "model", "detections")
    for r in rows:
        dets = ", ".join(f"{d.label} {d.score:.2f} [{d.x1:.0f},{d.y1:.0f},{d.x2:.0f},{d.y2:.0f}]"
                         for d in r.detections) or "-"
        table.add_row(r.frame_id, r.camera_id, str(r.seq),
                      r.captured_at.isoformat(timespec="milliseconds"),
                      f"{r.model_name} {r.model_version}", dets)
    console.print(table)
    if not rows:
        console.print("no results stored yet: is `framewire run` running? try `framewire status`")


deadletters_app = typer.Typer(help="Dead-lettered records.", invoke_without_command=True)
app.add_typer(deadletters_app, name="deadletters")


@deadletters_app.callback()
def deadletters(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Newest N dead letters.")] = 50,
) -> None:
    """List dead-lettered records: service, reason, source topic/partition/offset, camera, frame.

    Example: framewire deadletters --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from framewire.ops.status import dead_letter_report, dead_letters

    letters = dead_letters(settings_for(), newest=limit)
    if as_json:
        print_json([dead_letter_report(d) for _, d in letters])
        return
    table = Table("failed", "service", "code", "camera", "frame id", "source", "reason")
    for _, d in letters:
        source = (f"{d.source_topic}[{d.source_partition}]@{d.source_offset}"
                  if d.source_topic else "(at ingest)")
        table.add_row(d.failed_at.isoformat(timespec="seconds"), d.service, d.code,
                      d.camera_id or "-", d.frame_id or "-", source, d.reason)
    console.print(table)
    if not letters:
        console.print("no dead letters")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Show each service (alive, pid, partitions), records in/out/dead-lettered, and lag.

    Example: framewire status --json
    """
    from framewire.ops.status import broker_status, site_status, status_report

    settings = settings_for()
    statuses = site_status(settings)
    brokers = broker_status(settings)
    if as_json:
        print_json(status_report(statuses, brokers))
        return
    table = Table("service", "alive", "pids", "partitions", "in", "out", "dead-lettered",
                  "dropped", "lag", "CPU-s/1k frames", "J/1k frames", "metrics")
    for s in statuses:
        pids = ",".join(str(b.pid) for b in s.alive) or "-"
        parts = sum(len(b.partitions) for b in s.alive)
        table.add_row(s.service, "yes" if s.alive else "[red]no[/]", pids, str(parts),
                      str(s.total("records_in")), str(s.total("records_out")),
                      str(s.total("dead_lettered")), str(s.total("dropped")),
                      "-" if s.lag is None else str(s.lag),
                      "-" if s.cpu_per_1000_frames is None else f"{s.cpu_per_1000_frames:.1f}",
                      _joules(s),
                      ",".join(f":{b.metrics_port}" for b in s.alive if b.metrics_port) or "-")
    console.print(table)
    nodes = Table("broker", "node", "alive", "pid", "listener", "under-replicated partitions")
    for n in brokers.nodes:
        nodes.add_row(brokers.kind, str(n.node_id), "yes" if n.alive else "[red]no[/]",
                      "-" if n.pid is None else str(n.pid), n.listener,
                      "-" if n.under_replicated_partitions is None
                      else str(n.under_replicated_partitions))
    console.print(nodes)
    problems = [p for s in statuses for p in s.problems] + brokers.problems
    for problem in problems:
        console.print(f"[yellow]! {problem}[/]")
    if not problems:
        console.print("no problems found")


def _joules(status: ServiceStatus) -> str:
    """Host (RAPL) and GPU (NVML) joules per 1,000 frames, where the machines expose them."""
    parts = [f"{value:.0f}{label}" for label, value in (
        ("", status.joules_per_1000_frames("host")),
        (" GPU", status.joules_per_1000_frames("gpu"))) if value is not None]
    return " + ".join(parts) or "-"


@deadletters_app.command("replay")
def deadletters_replay(
    reason: Annotated[str | None, typer.Option(
        help="Only this reason code (e.g. corrupt_image) or a word of the reason.")] = None,
    since: Annotated[str | None, typer.Option(help="Only newer: 10m, 2h, 1d or an ISO time.")]
        = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed.")]
        = False,
) -> None:
    """Re-publish dead letters to their source topic once the cause is fixed.

    Replayed records keep their frame id, so a replay never duplicates stored results.
    Example: framewire deadletters replay --reason broker_timeout --since 1h
    """
    from framewire.ops.replay import parse_since, replay, select
    from framewire.ops.status import dead_letters

    settings = settings_for()
    chosen = select(dead_letters(settings), reason,
                    parse_since(since) if since else None)
    if dry_run or not chosen:
        console.print(f"{len(chosen)} dead letter(s) match" + (" (dry run)" if dry_run else ""))
        return
    for what, count in replay(settings, chosen).items():
        console.print(f"{count} {what}")
