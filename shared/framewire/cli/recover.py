"""``framewire replay`` and ``framewire rebuild-db``: disaster recovery from the Kafka log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from framewire.cli import app, console, print_json, settings_for

# exit codes: 1 = refused or failed, 2 = cannot run here (the embedded broker) or bad options
EXIT_REFUSED = 1
EXIT_CANNOT = 2


def _cannot(message: str, as_json: bool) -> typer.Exit:
    console.print(f"[red]cannot run here:[/] {message}")
    if as_json:
        print_json({"ok": False, "error": message})
    return typer.Exit(EXIT_CANNOT)


def _refused(message: str, as_json: bool) -> typer.Exit:
    console.print(f"[red]refused:[/] {message}")
    if as_json:
        print_json({"ok": False, "error": message})
    return typer.Exit(EXIT_REFUSED)


@app.command()
def replay(
    since: Annotated[str, typer.Option(
        help="Start of the range (inclusive): ISO-8601 time (no zone = UTC) or a duration "
        "ago: 30m, 2h, 1d.", show_default=False)],
    until: Annotated[str, typer.Option(
        help="End of the range (exclusive), as --since.")] = "now",
    topic: Annotated[str, typer.Option(
        help="Logical topic to replay: frames.raw (re-runs preprocess, inference, storage) "
        "or frames.ready (inference, storage).")] = "frames.raw",
    camera: Annotated[str | None, typer.Option(
        help="Only this camera's frames (the Kafka key).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Re-run a retained time range of frames through the pipeline, e.g. after a model change.

    Records stamped in [--since, --until) are produced again to the same topic and partition
    with the same key, bytes (so frame ids) and headers, a fresh trace and the header
    framewire-replay. Their new results replace the stored ones when the model name or
    version differs; a replay with the same model changes no row. Needs Apache Kafka: the
    embedded broker keeps no history (exit 2). What can be replayed is bounded by the topic's
    retention (FRAMEWIRE_RETENTION, frames.raw 24h by default).

    Example: framewire replay --topic frames.raw --since 2026-11-25T08:00 --until 90m --camera cam-1
    """
    from framewire.errors import ConfigError
    from framewire.ops.logranges import parse_time
    from framewire.ops.logreplay import (
        RecoveryRefused,
        embedded_refusal,
        replay_topic,
        retention_of,
    )
    from framewire.ops.logreplay import replay as run_replay

    settings = settings_for()
    refusal = embedded_refusal(settings, "replay")
    if refusal:
        raise _cannot(refusal, as_json)
    now = datetime.now(UTC)
    try:
        replay_topic(topic)
        start = parse_time(since, now, "--since")
        end = parse_time(until, now, "--until")
    except ConfigError as exc:
        raise _cannot(str(exc), as_json) from None
    who = f" of camera {camera}" if camera else ""
    console.print(f"replaying {topic}{who} from {start.isoformat(timespec='seconds')} "
                  f"to {end.isoformat(timespec='seconds')}")

    def progress(counts: Any) -> None:
        console.print(f"read {counts.records_read}, republished {counts.republished}, "
                      f"skipped (other cameras) {counts.skipped_by_camera}")

    try:
        counts = run_replay(settings, topic, start, end, camera, progress)
    except RecoveryRefused as exc:
        raise _cannot(str(exc), as_json) from None
    except ConfigError as exc:
        raise _cannot(str(exc), as_json) from None
    if as_json:
        print_json({"ok": True, **counts.as_json()})
    console.print(f"done: read {counts.records_read}, republished {counts.republished}, "
                  f"skipped {counts.skipped_by_camera} of other cameras and "
                  f"{counts.skipped_outside_range} stamped outside the range "
                  f"(replay id {counts.replay_id})")
    if counts.cut_by_retention:
        console.print(f"[yellow]! partitions {counts.cut_by_retention} begin at their oldest "
                      "retained record: older records of the range may have expired "
                      "(retention)[/]")
    if counts.republished == 0:
        console.print("[yellow]nothing replayed: no retained record in the range (check "
                      f"the times, --camera, and {topic}'s retention: "
                      f"{retention_of(settings, topic)})[/]")


@app.command("rebuild-db")
def rebuild_db(
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a database that already holds results (rows there are "
        "kept; only missing frames are added).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Rebuild the results tables from the retained detections topic into an empty database.

    Reads detections from its oldest retained record to its end offsets at the start (no
    consumer group offsets are committed), and stores every decodable result in
    FRAMEWIRE_DATABASE_URL (default: SQLite in FRAMEWIRE_HOME). Refuses (exit 1) a database
    that already holds results unless --force. Needs Apache Kafka: the embedded broker keeps
    no history (exit 2). The rebuild holds what detections retains (30d by default).

    Example: FRAMEWIRE_DATABASE_URL=sqlite:////var/lib/framewire/new.db framewire rebuild-db --json
    """
    from framewire.ops.logreplay import RecoveryRefused, embedded_refusal, rebuild
    from framewire.store.db import open_database

    settings = settings_for()
    refusal = embedded_refusal(settings, "rebuild-db")
    if refusal:
        raise _cannot(refusal, as_json)
    database = open_database(settings.resolved_database_url)

    def progress(counts: Any) -> None:
        console.print(f"read {counts.records_read}, written {counts.rows_written}, "
                      f"duplicates {counts.duplicates_skipped}, undecodable {counts.undecodable}")

    try:
        counts = rebuild(settings, database, force, progress)
    except RecoveryRefused as exc:
        raise _refused(str(exc), as_json) from None
    finally:
        database.close()
    if as_json:
        print_json({"ok": True, **counts.as_json()})
    console.print(f"done: read {counts.records_read} records, wrote {counts.rows_written} rows "
                  f"({counts.rows_replaced} replacing another model's), skipped "
                  f"{counts.duplicates_skipped} duplicates and {counts.undecodable} undecodable "
                  f"records, into {counts.database}")
    if counts.cut_by_retention:
        console.print(f"[yellow]! detections partitions {counts.cut_by_retention} lost older "
                      "records to retention: results older than those are not rebuilt[/]")
