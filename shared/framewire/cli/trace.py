"""``framewire trace``: one frame's journey across services, from the embedded span store."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from framewire.cli import app, console, settings_for
from framewire.errors import ConfigError

BAR_WIDTH = 40


def waterfall_rows(spans: list, width: int = BAR_WIDTH) -> list[tuple[str, str, float, float, str]]:
    """(service, span, start offset ms, duration ms, bar) per span, in start order."""
    if not spans:
        return []
    t0 = min(s.start_ns for s in spans)
    total = max(max(s.end_ns for s in spans) - t0, 1)
    rows = []
    for s in spans:
        left = int((s.start_ns - t0) / total * width)
        length = max(1, round((s.end_ns - s.start_ns) / total * width))
        bar = " " * left + ("!" if s.status == "error" else "█") * min(length, width - left or 1)
        rows.append((s.service, s.name, (s.start_ns - t0) / 1e6, s.duration_ms, bar))
    return rows


@app.command("trace")
def trace_command(
    frame_id: Annotated[str | None, typer.Argument(help="The frame to show.")] = None,
    slowest: Annotated[int | None, typer.Option(help="List the N slowest frames instead.")]
        = None,
    since: Annotated[str, typer.Option(help="With --slowest: only newer (10m, 2h, 1d, ISO).")]
        = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Show one frame's trace as a waterfall across services, or the slowest frames.

    Example: framewire trace 01JD3R6K2M8Q... ; framewire trace --slowest 10 --since 10m
    """
    from framewire.ops.replay import parse_since
    from framewire.store.db import open_database
    from framewire.telemetry.spanstore import slowest_frames, trace_of_frame

    settings = settings_for()
    db = open_database(settings.resolved_span_database_url)
    try:
        if slowest is not None:
            frames = slowest_frames(db, slowest, parse_since(since))
            if as_json:
                typer.echo(json.dumps([{"frame_id": f, "ms": ms} for f, ms in frames], indent=2))
                return
            table = Table("frame id", "end to end ms")
            for f, ms in frames:
                table.add_row(f, f"{ms:.1f}")
            console.print(table)
            return
        if frame_id is None:
            raise ConfigError("give a FRAME_ID (see `framewire results`) or --slowest N")
        spans = trace_of_frame(db, frame_id)
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in spans], indent=2, default=str))
        return
    if not spans:
        console.print(f"no spans for frame {frame_id}: unknown id, not sampled "
                      "(FRAMEWIRE_TRACE_SAMPLE_RATIO), or spans exported to OTLP instead")
        raise typer.Exit(1)
    table = Table("service", "span", "start ms", "duration ms", "timeline", box=None)
    for service, name, start, duration, bar in waterfall_rows(spans):
        table.add_row(service, name, f"{start:8.1f}", f"{duration:8.1f}", bar)
    console.print(f"trace {spans[0].trace_id}  frame {frame_id}  "
                  f"{len(spans)} spans  {sum(1 for s in spans if s.status == 'error')} errors")
    console.print(table)
