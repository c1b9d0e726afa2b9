"""The ``framewire`` command: run the stack, publish frames, look at results and health."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from framewire.config import Settings, load_settings
from framewire.errors import ConfigError, FramewireError
from framewire.logs import setup_logging

app = typer.Typer(
    help="Framewire: distributed image processing over Kafka. Start with `framewire run`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def settings_for(service: str = "cli") -> Settings:
    """Load settings and set up logging for this process."""
    settings = load_settings()
    setup_logging(service, settings.log_level if service != "cli" else "WARNING")
    return settings


@app.callback()
def _global(
    home: Annotated[Path | None, typer.Option(help="State folder (FRAMEWIRE_HOME).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML settings file (FRAMEWIRE_CONFIG).")
    ] = None,
) -> None:
    if home is not None:
        os.environ["FRAMEWIRE_HOME"] = str(home)
    if config is not None:
        os.environ["FRAMEWIRE_CONFIG"] = str(config)


@app.command()
def run(
    demo: Annotated[bool, typer.Option("--demo/--no-demo", help="Start the demo cameras.")] = True,
    services: Annotated[str, typer.Option(help="Comma list of services to start.")] =
        "ingest,preprocess,inference,storage",
    replicas: Annotated[str, typer.Option(
        help="Processes per service, e.g. inference=2,preprocess=2 (default 1 each).")] = "",
) -> None:
    """Start the embedded broker, every service and the demo cameras; Ctrl-C stops all.

    Example: framewire run --replicas inference=2,preprocess=2
    """
    from framewire.codec import make_codec
    from framewire.status import site_status
    from framewire.supervisor import Supervisor

    settings = settings_for("run")
    sup = Supervisor(settings, [s.strip() for s in services.split(",") if s.strip()], demo,
                     parse_replicas(replicas))
    console.print(f"[bold]Framewire[/] home={settings.home.resolve()} "
                  f"broker={settings.bootstrap_servers} db={settings.resolved_database_url}")
    stop = _stop_on_signals()
    try:
        sup.start()
        console.print(f"services started; logs in {sup.logs}. Ctrl-C to stop.")
        codec = make_codec(settings.schema_registry_url)
        started, last = time.monotonic(), (time.monotonic(), 0)
        while not stop.wait(3.0):
            for event in sup.check():
                console.print(f"[yellow]{event}[/]")
            line, last = _status_line(site_status(settings, codec), started, last)
            console.print(line, soft_wrap=True)
    finally:
        console.print("stopping: services finish their batch, commit and leave their groups")
        sup.stop()
        console.print("stopped")


def parse_replicas(text: str) -> dict[str, int]:
    """``inference=2,preprocess=2`` → {"inference": 2, "preprocess": 2}."""
    from framewire.services import SERVICES

    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, number = part.partition("=")
        if name not in SERVICES or not number.isdigit() or int(number) < 1:
            raise ConfigError(f"--replicas {part!r}: write SERVICE=N with N ≥ 1 and SERVICE one "
                              f"of {', '.join(SERVICES)}, e.g. inference=2")
        counts[name] = int(number)
    return counts


def _stop_on_signals():  # noqa: ANN202
    from framewire.runtime import StopSignal

    return StopSignal()


def _status_line(statuses: list, started: float,
                 last: tuple[float, int]) -> tuple[str, tuple[float, int]]:
    """One line of live status; ``last`` is (when, stored) at the previous line, for the rate."""
    by = {s.service: s for s in statuses}
    frames_in = by["ingest"].total("records_out") if "ingest" in by else 0
    stored = by["storage"].total("records_out") if "storage" in by else 0
    dead = sum(s.total("dead_lettered") for s in statuses)
    lag = sum(s.lag or 0 for s in statuses)
    alive = sum(1 for s in statuses if s.alive)
    now = time.monotonic()
    fps = (stored - last[1]) / max(now - last[0], 1e-6)
    dropped = sum(s.total("dropped") for s in statuses)
    problems = sum(len(s.problems) for s in statuses)
    line = (f"[{int(now - started):>4}s] services up {alive}/{len(statuses)} | "
            f"frames in {frames_in} | stored {stored} ({fps:.1f}/s) | "
            f"dead-lettered {dead} | dropped {dropped} | lag {lag}"
            + (f" | {problems} problem(s): `framewire status`" if problems else ""))
    return line, (now, stored)


@app.command()
def service(
    name: Annotated[str, typer.Argument(help="ingest, preprocess, inference or storage.")],
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="ingest: add demo cameras.")
    ] = False,
) -> None:
    """Run one service in the foreground (one more replica joins its consumer group).

    Example: framewire service inference
    """
    from framewire.services import SERVICES, run_service

    if name not in SERVICES:
        raise ConfigError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    run_service(name, settings_for(name), demo=demo)


@app.command()
def broker(
    port: Annotated[
        int | None, typer.Option(help="Port (default: from bootstrap_servers).")
    ] = None,
) -> None:
    """Run the embedded Kafka-protocol broker alone, in the foreground, and create the topics.

    Example: framewire broker --port 19092
    """
    from framewire.broker import EmbeddedBroker, ensure_topics

    settings = settings_for("broker")
    host, _, default_port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    b = EmbeddedBroker(host, port or int(default_port), settings.home / "logs" / "broker.log")
    b.start()
    if port is not None:
        settings = load_settings(bootstrap_servers=b.bootstrap_servers)
    ensure_topics(settings)
    console.print(f"broker listening on {b.bootstrap_servers} (memory storage); Ctrl-C stops it")
    stop = _stop_on_signals()
    try:
        while not stop.wait(1.0):
            if b.process is None or b.process.poll() is not None:
                raise FramewireError("the broker exited; see its log under FRAMEWIRE_HOME/logs")
    finally:
        b.stop()


from framewire.cli import bench as _bench  # noqa: E402,F401
from framewire.cli import publish as _publish  # noqa: E402,F401  (registers commands)
from framewire.cli import trace as _trace  # noqa: E402,F401
from framewire.cli import views as _views  # noqa: E402,F401


def main() -> None:
    """Console entry point: friendly messages for configuration and runtime errors."""
    try:
        app()
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        sys.exit(2)
    except FramewireError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
