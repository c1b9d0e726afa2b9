"""The ``framewire`` command: run the stack, publish frames, look at results and health."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from framewire.config import Settings, load_settings
from framewire.errors import ConfigError, FramewireError, TransientError
from framewire.secrets import mask_url, mask_urls_in, masked_settings
from framewire.telemetry.logs import setup_logging

app = typer.Typer(
    help="Framewire: distributed image processing over Kafka. Start with `framewire run`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console(stderr=True)
log = logging.getLogger(__name__)


def settings_for(service: str = "cli") -> Settings:
    """Load settings and set up logging for this process; log them, secrets masked."""
    settings = load_settings()
    setup_logging(service, settings.log_level if service != "cli" else "WARNING")
    log.info("effective config", extra={"settings": masked_settings(settings)})
    return settings


def print_json(data: Any) -> None:
    """Print a command's ``--json`` output: indented, times and other values as text."""
    typer.echo(json.dumps(data, default=str, indent=2))


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
    services: Annotated[str, typer.Option(
        help="Comma list of services to start (default: every registered stage, as "
        "`framewire topology` lists them).")] = "",
    replicas: Annotated[str, typer.Option(
        help="Processes per service, e.g. inference=2,preprocess=2 (default: each stage's "
        "replicas setting, 1).")] = "",
    broker: Annotated[str | None, typer.Option(
        "--broker", help="Broker to start: embedded (memory only) or kafka (Apache Kafka, "
        "KRaft, data in FRAMEWIRE_HOME). Default: FRAMEWIRE_BROKER.")] = None,
    broker_nodes: Annotated[int | None, typer.Option(
        "--broker-nodes", help="Apache Kafka nodes (node N on the bootstrap port + N - 1). "
        "Default: FRAMEWIRE_BROKER_NODES, 1.")] = None,
) -> None:
    """Start the broker, every service and the demo cameras; Ctrl-C stops all.

    Example: framewire run --broker kafka --broker-nodes 3 --replicas inference=2
    """
    from framewire.contracts.codec import make_codec
    from framewire.ops.status import site_status
    from framewire.ops.supervisor import Supervisor

    _broker_options(broker, broker_nodes)
    settings = settings_for("run")
    sup = Supervisor(settings, parse_services(settings, services), demo,
                     parse_replicas(settings, replicas))
    console.print(f"[bold]Framewire[/] home={settings.home.resolve()} "
                  f"broker={settings.bootstrap_servers} ({_broker_kind(settings)}) "
                  f"db={mask_url(settings.resolved_database_url)}")
    stop = _stop_on_signals()
    try:
        sup.start()
        if sup.kafka is not None:
            console.print(f"Apache Kafka: {sup.kafka.nodes} node(s) on "
                          f"{sup.kafka.bootstrap_servers}, data in {sup.kafka.folder}")
        console.print(f"services started; logs in {sup.logs}. Ctrl-C to stop.")
        if any(child.service == "gateway" for child in sup.children):
            console.print(_gateway_line(settings), soft_wrap=True)
        codec = make_codec(settings.schema_registry_url, settings.schema_registry_auth)
        started, last = time.monotonic(), (time.monotonic(), 0)
        while not stop.wait(3.0):
            for event in sup.check():
                console.print(f"[yellow]{event}[/]")
            try:
                line, last = _status_line(sup.settings, site_status(sup.settings, codec),
                                          started, last)
            except TransientError as exc:  # a broker node restarting: the site goes on
                line = f"status unavailable for now: {exc}"
            except Exception as exc:  # noqa: BLE001 (monitoring must never stop the site)
                log.exception("status check failed; the site goes on")
                line = f"status unavailable: {type(exc).__name__}: {exc}"
            console.print(line, soft_wrap=True)
    finally:
        console.print("stopping: services finish their batch, commit and leave their groups")
        sup.stop()
        console.print("stopped")


def _gateway_line(settings: Settings) -> str:
    """Where the gateway serves, and how to get a token for it."""
    gateway = settings.gateway
    hint = "(sign in with a token: `framewire token create --role admin`)"
    if not gateway.port:  # a free port, known once it listens
        where = f"the URL in {settings.home.resolve() / 'gateway.url'}"
        return f"gateway at {where}, API under /api/v1\ndashboard at that URL {hint}"
    url = f"http://{gateway.host}:{gateway.port}"
    return (f"gateway {url}/api/v1 (OpenAPI {url}/openapi.json)\n"
            f"dashboard {url}/ {hint}")


def _broker_options(kind: str | None, nodes: int | None) -> None:
    """Command-line broker options win over the environment and the YAML file."""
    if kind is not None:
        if kind not in ("embedded", "kafka"):
            raise ConfigError(f"--broker {kind!r}: choose embedded or kafka")
        os.environ["FRAMEWIRE_BROKER"] = kind
    if nodes is not None:
        os.environ["FRAMEWIRE_BROKER_NODES"] = str(nodes)


def _broker_kind(settings: Settings) -> str:
    return {"embedded": "embedded, memory only",
            "kafka": f"Apache Kafka, {settings.broker_nodes} node(s)",
            "external": "existing cluster"}[settings.broker_kind]


def parse_services(settings: Settings, text: str) -> list[str]:
    """``ingest,storage`` → those stages, checked; empty → every registered stage."""
    from framewire.topology import topology

    names = topology(settings).names
    chosen = [s.strip() for s in text.split(",") if s.strip()] or list(names)
    for name in chosen:
        if name not in names:
            raise ConfigError(f"--services: unknown service {name!r}; choose among "
                              f"{', '.join(names)}")
    return chosen


def parse_replicas(settings: Settings, text: str) -> dict[str, int]:
    """``inference=2,preprocess=2`` → {"inference": 2, "preprocess": 2}."""
    from framewire.topology import topology

    names = topology(settings).names
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, number = part.partition("=")
        if name not in names or not number.isdigit() or int(number) < 1:
            raise ConfigError(f"--replicas {part!r}: write SERVICE=N with N ≥ 1 and SERVICE one "
                              f"of {', '.join(names)}, e.g. inference=2")
        counts[name] = int(number)
    return counts


def _stop_on_signals():  # noqa: ANN202
    from framewire.runtime import StopSignal

    return StopSignal()


def _status_line(settings: Settings, statuses: list, started: float,
                 last: tuple[float, int]) -> tuple[str, tuple[float, int]]:
    """One line of live status; ``last`` is (when, stored) at the previous line, for the rate."""
    from framewire.topology import topology

    site = topology(settings)
    by = {s.service: s for s in statuses}
    # frames in: what the sources published; stored: what the last stages of the frames' own
    # path took (not the analytics' events and alerts, stored beside them)
    frames_in = sum(by[s.name].total("records_out") for s in site.sources if s.name in by)
    stored = sum(by[s.name].total("records_out") for s in site.frame_path
                 if not s.outputs and s.name in by)
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
    name: Annotated[str, typer.Argument(
        help="A registered stage: ingest, preprocess, inference, storage, gateway, or a "
        "plug-in's (`framewire topology`).")],
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="ingest: add demo cameras.")
    ] = False,
) -> None:
    """Run one service in the foreground (one more replica joins its consumer group).

    Example: framewire service inference
    """
    from framewire.ops.launch import run_service

    run_service(name, settings_for(name), demo=demo)  # an unknown name: ConfigError


@app.command()
def broker(
    port: Annotated[
        int | None, typer.Option(help="Port (default: from bootstrap_servers).")
    ] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="embedded (Tansu, memory only) or kafka (Apache Kafka, KRaft). "
        "Default: FRAMEWIRE_BROKER.")] = None,
    nodes: Annotated[int | None, typer.Option(
        "--nodes", help="Apache Kafka nodes; node N listens on the port + N - 1.")] = None,
) -> None:
    """Run the broker alone, in the foreground, and create Framewire's topics.

    Example: framewire broker --kind kafka --nodes 3
    """
    from framewire.broker.client import EmbeddedBroker, embedded_listen_host, ensure_topics
    from framewire.ops.supervisor import managed_kafka

    _broker_options(kind, nodes)
    if port is not None:
        os.environ["FRAMEWIRE_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    settings = settings_for("broker")
    if not settings.embedded_broker:
        raise ConfigError("FRAMEWIRE_EMBEDDED_BROKER=false: this site uses an existing "
                          "cluster, so there is no broker to run; unset it to run one here")
    host, _, default_port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    if settings.manages_kafka:
        cluster = managed_kafka(settings)
        console.print(f"starting Apache Kafka: {cluster.nodes} node(s), data in "
                      f"{cluster.folder} (first start resolves the jars with Maven)")
        cluster.start()
        servers, alive = cluster.bootstrap_servers, lambda: not cluster.dead_nodes()
        stopper, what = cluster.stop, f"Apache Kafka, {cluster.nodes} node(s), data on disk"
    else:
        b = EmbeddedBroker(host, int(default_port), settings.home / "logs" / "broker.log",
                           listen_host=embedded_listen_host(settings))
        b.start()
        servers, what = b.bootstrap_servers, "embedded, memory storage"
        alive = lambda: b.process is not None and b.process.poll() is None  # noqa: E731
        stopper = b.stop
    try:
        ensure_topics(settings.model_copy(update={"bootstrap_servers": servers}))
        console.print(f"broker listening on {servers} ({what}); Ctrl-C stops it")
        stop = _stop_on_signals()
        while not stop.wait(1.0):
            if not alive():
                raise FramewireError("the broker exited; see its log under FRAMEWIRE_HOME/logs")
    finally:
        stopper()


@app.command()
def topics(
    apply: Annotated[bool, typer.Option(
        "--apply", help="Set topic configs that differ back to the settings' values.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Create Framewire's missing topics, add partitions, and report configs that drifted.

    Exits 0 when the cluster matches the settings, 1 when something differs.
    Example: framewire topics --apply
    """
    import json

    from framewire.broker.client import client_config, ensure_topics, topic_drift, wait_for_broker

    settings = settings_for()
    wait_for_broker(client_config(settings), 30.0)
    created = ensure_topics(settings)
    drift = topic_drift(settings, apply=apply)
    remaining = [d for d in drift if not d.endswith("(reset)")]
    if as_json:
        print(json.dumps({"created": created, "drift": drift, "ok": not remaining}, indent=2))
    else:
        for topic in created:
            console.print(f"created {topic}")
        for line in drift:
            console.print(f"[yellow]! {line}[/]")
        if not drift:
            console.print("topics match the settings")
    if remaining:
        raise typer.Exit(1)


from framewire.cli import bench as _bench  # noqa: E402,F401
from framewire.cli import cameras as _cameras  # noqa: E402,F401
from framewire.cli import erase as _erase  # noqa: E402,F401
from framewire.cli import events as _events  # noqa: E402,F401
from framewire.cli import licenses as _licenses  # noqa: E402,F401
from framewire.cli import model as _model  # noqa: E402,F401
from framewire.cli import publish as _publish  # noqa: E402,F401  (registers commands)
from framewire.cli import recover as _recover  # noqa: E402,F401
from framewire.cli import token as _token  # noqa: E402,F401
from framewire.cli import topology as _topology  # noqa: E402,F401
from framewire.cli import trace as _trace  # noqa: E402,F401
from framewire.cli import views as _views  # noqa: E402,F401


def main() -> None:
    """Console entry point: friendly messages for configuration and runtime errors."""
    # every service and command starts here: what it creates (home, logs, databases, blobs)
    # is its user's alone, 0700 folders and 0600 files
    os.umask(0o077)
    try:
        app()
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {mask_urls_in(str(exc))}")
        sys.exit(2)
    except FramewireError as exc:
        console.print(f"[red]error:[/] {mask_urls_in(str(exc))}")
        sys.exit(1)
