"""``framewire events`` and ``framewire alerts``: what the analytics saw, as stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from framewire.analytics.records import ALERT_STATES, EVENT_TYPES
from framewire.cli import app, console, print_json, settings_for
from framewire.errors import ConfigError


def _since(text: str | None) -> Any:
    from framewire.ops.replay import parse_since

    return parse_since(text) if text else None


def _check(value: str | None, allowed: tuple[str, ...], option: str) -> None:
    if value is not None and value not in allowed:
        raise ConfigError(f"{option} {value!r}: give one of {', '.join(allowed)}")


@app.command()
def events(
    camera: Annotated[str | None, typer.Option(help="Only this camera.")] = None,
    type_: Annotated[str | None, typer.Option(
        "--type", help=f"Only this type: {', '.join(EVENT_TYPES)}.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Only events at or after: 10m, 2h, 1d or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N events.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the analytics' stored events, newest first by frame time: line crossings, zone
    enters and leaves, dwells and window counts.

    Example: framewire events --camera door-1 --type line_cross --since 1h --json
    """
    from framewire.store.analytics import query_events
    from framewire.store.db import open_database

    _check(type_, EVENT_TYPES, "--type")
    settings = settings_for()
    with open_database(settings.resolved_database_url) as db:
        rows = query_events(db, camera, type_, _since(since), limit)
    if as_json:
        print_json(rows)
        return
    table = Table("at (UTC)", "camera", "type", "name", "track", "label", "detail")
    for e in rows:
        table.add_row(_when(e["at"]), e["camera_id"], e["type"], e["name"],
                      "-" if e["track_id"] is None else str(e["track_id"]),
                      e["label"] or "-", _detail(e))
    console.print(table)
    if not rows:
        console.print("no events stored: are lines or zones set (analytics.cameras) and the "
                      "analytics service running? try `framewire status`")


def _when(iso: str, date: bool = True) -> str:
    """An ISO time of the JSON as the tables show it: to the second, in UTC."""
    shown = datetime.fromisoformat(iso).astimezone(UTC)
    return shown.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _detail(event: dict[str, Any]) -> str:
    window = event["window"]
    if window is not None:
        counted = window["counted"] + (f" {window['direction']}" if window["direction"] else "")
        return (f"{window['kind']} {_when(window['start'], False)}-"
                f"{_when(window['end'], False)}: {counted} {window['count']}")
    if event["direction"]:
        return event["direction"]
    return f"{event['dwell_s']:.1f} s" if event["dwell_s"] is not None else "-"


@app.command()
def alerts(
    camera: Annotated[str | None, typer.Option(help="Only this camera.")] = None,
    state: Annotated[str | None, typer.Option(
        help=f"Only this state: {', '.join(ALERT_STATES)}.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Only changes at or after: 10m, 2h, 1d or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N changes.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the analytics' stored alerts, newest first: each firing and each resolved.

    Example: framewire alerts --camera door-1 --json
    """
    from framewire.store.analytics import query_alerts
    from framewire.store.db import open_database

    _check(state, ALERT_STATES, "--state")
    settings = settings_for()
    with open_database(settings.resolved_database_url) as db:
        rows = query_alerts(db, camera, state, _since(since), limit)
    if as_json:
        print_json(rows)
        return
    table = Table("at (UTC)", "camera", "rule", "state", "value", "peak", "since")
    for a in rows:
        table.add_row(_when(a["at"]), a["camera_id"], a["rule"], a["state"], str(a["value"]),
                      str(a["peak"]), _when(a["started_at"]))
    console.print(table)
    if not rows:
        console.print("no alerts stored")
