"""``framewire erase``: remove what the site keeps of one camera."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from framewire.cli import app, console, settings_for


@app.command()
def erase(
    camera: Annotated[str, typer.Option(help="The camera id to erase.", show_default=False)],
    before: Annotated[str | None, typer.Option(
        help="Only what is older: an ISO-8601 time (no zone = UTC) or a duration ago: 30m, "
        "2h, 7d. Default: everything.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Remove a camera's results, detections, analytics' events and alerts, spans and blobs
    (originals, letterboxed pixels, dead-letter payloads), and print what was removed, per kind.

    Records still on the topics expire with their retention (Kafka deletes by age); the
    report counts them. Example: framewire erase --camera cam-3 --before 30d --json
    """
    from framewire.ops.erase import KINDS, erase_camera
    from framewire.ops.replay import parse_since

    settings = settings_for()
    report = erase_camera(settings, camera, parse_since(before) if before else None)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    console.print(f"erased camera {camera}" + (f" before {report.before.isoformat()}"
                                               if report.before else "") + ":")
    for kind in KINDS:
        console.print(f"  {kind.replace('_', ' '):<22} {report.counts[kind]}")
    for note in report.notes:
        console.print(f"  note: {note}")
