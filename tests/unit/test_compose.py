"""docker-compose.yml and infra/Dockerfile agree with the code, checked without a Docker engine.

Every Framewire container runs a real ``framewire`` command with real settings; Kafka's
listeners, quorum and replication fit together; Prometheus, the OpenTelemetry collector and
Grafana point at services and ports that exist; the image is multi-stage and unprivileged.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import typer.core
import yaml
from packaging.specifiers import SpecifierSet
from pydantic import BaseModel

import framewire.cli
from framewire.config import Settings, load_settings
from framewire.errors import ConfigError
from framewire.topology import topology

FRAMEWIRE_SERVICES = topology().names

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = "infra/Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# typer parses with a copy of click of its own from 0.2x on, with click itself before
CLICK = getattr(typer.core, "_click", None) or importlib.import_module("click")
# where the images read their configuration unless told otherwise
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"


# --- reading the files -----------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped and continuation lines joined."""
    text = (ROOT / DOCKERFILE).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the stage the image is made of (after the last FROM)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    """ENV of the final stage (``ENV A=1 B=2`` form)."""
    env = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_exec_form(keyword: str) -> list[str]:
    """ENTRYPOINT or CMD of the final stage, in exec (JSON) form."""
    [args] = [args for kw, args in final_stage() if kw == keyword]
    return json.loads(args)


def framewire_services() -> dict[str, dict[str, Any]]:
    """Compose services built from Framewire's Dockerfile."""
    found = {}
    for name, service in SERVICES.items():
        build = service.get("build")
        if isinstance(build, dict) and build.get("dockerfile") == DOCKERFILE:
            found[name] = service
    assert found, f"no compose service is built from {DOCKERFILE}"
    return found


def long_running(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that keep running (not one-shot jobs such as `topics`)."""
    return {n: s for n, s in services.items() if str(s.get("restart", "no")) != "no"}


def kafka_nodes() -> dict[str, dict[str, str]]:
    """Kafka node service name -> its environment."""
    nodes = {n: env_of(s) for n, s in SERVICES.items()
             if str(s.get("image", "")).startswith("apache/kafka:")}
    assert nodes, "no apache/kafka service in docker-compose.yml"
    return nodes


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """What a Framewire container sees: the image's ENV, then compose's environment."""
    return {**image_env(), **env_of(service)}


def argv_of(service: dict[str, Any]) -> list[str]:
    """The process a container runs: entrypoint + command, compose overriding the image."""
    entrypoint = service.get("entrypoint", image_exec_form("ENTRYPOINT"))
    command = service.get("command", image_exec_form("CMD"))
    as_list = [shlex.split(x) if isinstance(x, str) else list(x) for x in (entrypoint, command)]
    return as_list[0] + as_list[1]


def listeners(text: str) -> dict[str, tuple[str, int]]:
    """``PLAINTEXT://:9092,CONTROLLER://:9093`` -> {"PLAINTEXT": ("", 9092), ...}."""
    found = {}
    for item in text.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume of a service, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            found.append((source, target))
    return found


def mounted_file(service: dict[str, Any], target: str) -> Path:
    """The file of this repository that a service sees at ``target``."""
    sources = [source for source, t in mounts(service) if t == target]
    assert sources, f"nothing is mounted at {target}"
    return ROOT / sources[0]


def services_with_image(prefix: str) -> dict[str, dict[str, Any]]:
    found = {n: s for n, s in SERVICES.items() if str(s.get("image", "")).startswith(prefix)}
    assert found, f"no service runs an image {prefix}*"
    return found


# --- the Framewire containers ----------------------------------------------------------------


def parse_cli(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse ``argv`` as `framewire` would, without running it: the subcommand path and the
    last command's parameters. Unknown commands and options raise click's UsageError."""
    command = typer.main.get_command(framewire.cli.app)
    ctx = command.make_context("framewire", list(argv), resilient_parsing=False)
    path = []
    while hasattr(command, "resolve_command"):  # a group: the next word names a subcommand
        # click 8.2 moved the subcommand's name to a private attribute
        protected = (ctx._protected_args if hasattr(ctx, "_protected_args")
                     else ctx.protected_args)
        pending = [*protected, *ctx.args]
        if not pending:
            raise CLICK.exceptions.UsageError("no command given", ctx)
        name, sub, rest = command.resolve_command(ctx, pending)
        assert name is not None and sub is not None
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)
        path.append(name)
    return path, ctx.params


def test_every_framewire_command_is_a_real_cli_command():
    scripts = PYPROJECT["project"]["scripts"]
    for name, service in framewire_services().items():
        argv = argv_of(service)
        assert argv[0] in scripts, f"{name}: runs {argv[0]!r}, not a console script of ours"
        try:
            path, params = parse_cli(argv[1:])
        except CLICK.ClickException as exc:
            pytest.fail(f"{name}: `{shlex.join(argv)}` is not a framewire command: "
                        f"{exc.format_message()}")
        if path == ["service"]:
            assert params["name"] in FRAMEWIRE_SERVICES, f"{name}: no service {params['name']!r}"


def test_the_cli_parser_rejects_what_framewire_would():
    # the check above can fail: a made-up command or option does not parse
    for argv in (["no-such-command"], ["service", "ingest", "--no-such-option"], ["service"]):
        with pytest.raises(CLICK.exceptions.UsageError):
            parse_cli(argv)


def test_every_service_of_the_pipeline_runs_in_compose():
    running = set()
    for service in long_running(framewire_services()).values():
        path, params = parse_cli(argv_of(service)[1:])
        if path == ["service"]:
            running.add(params["name"])
    assert running >= set(FRAMEWIRE_SERVICES), f"missing: {set(FRAMEWIRE_SERVICES) - running}"


def settings_field(key: str) -> bool:
    """Whether FRAMEWIRE_A__B names a field of Settings (nested models through ``__``)."""
    model: type[BaseModel] | None = Settings
    for part in key.removeprefix("FRAMEWIRE_").lower().split("__"):
        field = model.model_fields.get(part) if model else None
        if field is None:
            return False
        annotation = field.annotation
        is_model = inspect.isclass(annotation) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None
    return True


def test_every_environment_variable_is_a_real_setting():
    import opentelemetry.sdk.environment_variables as otel

    otel_names = {value for key, value in vars(otel).items() if key.startswith("OTEL_")}
    for name, service in framewire_services().items():
        for key in container_env(service):
            if key.startswith("FRAMEWIRE_"):
                assert key == "FRAMEWIRE_CONFIG" or settings_field(key), (
                    f"{name}: {key} is not a Framewire setting (config.Settings)")
            elif key.startswith("OTEL_"):
                assert key in otel_names, f"{name}: {key} is not an OpenTelemetry SDK variable"
            else:
                assert key in {"PATH", "PYTHONUNBUFFERED"}, f"{name}: nothing reads {key}"


def test_settings_check_catches_a_misspelt_variable():
    assert settings_field("FRAMEWIRE_INFERENCE__BATCH_SIZE")
    assert not settings_field("FRAMEWIRE_INFERENCE__BATCHSIZE")
    assert not settings_field("FRAMEWIRE_METRICS_PORT__X")


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container would load, or a test failure naming the bad value."""
    import os

    for key in list(os.environ):
        if key.startswith("FRAMEWIRE_"):
            monkeypatch.delenv(key)
    for key, value in container_env(service).items():
        if key.startswith("FRAMEWIRE_"):
            monkeypatch.setenv(key, value)
    try:
        return load_settings()
    except ConfigError as exc:
        pytest.fail(str(exc))


def test_every_framewire_container_has_valid_settings(monkeypatch):
    for name, service in framewire_services().items():
        settings = settings_of(service, monkeypatch)
        # the compose cluster is used as it is: no container starts a broker of its own
        assert not settings.embedded_broker, f"{name}: set FRAMEWIRE_EMBEDDED_BROKER=false"
        # blobs written by one service are read by the next: FRAMEWIRE_HOME is a shared volume
        home = str(settings.home)
        assert home in {target for _, target in mounts(service)}, (
            f"{name}: FRAMEWIRE_HOME={home} is not a volume; services would not share blobs")


# --- Kafka -----------------------------------------------------------------------------------


def test_framewire_bootstrap_servers_are_the_kafka_nodes_advertised_listeners():
    internal = set()
    for node, env in kafka_nodes().items():
        bound = listeners(env["KAFKA_LISTENERS"])
        for listener, (host, port) in listeners(env["KAFKA_ADVERTISED_LISTENERS"]).items():
            assert bound.get(listener, ("", -1))[1] == port, (
                f"{node}: advertises {listener} on {port} but listens on {bound.get(listener)}")
            if host == node:  # reachable by its service name from other containers
                internal.add(f"{host}:{port}")
    assert len(internal) == len(kafka_nodes()), f"one in-network listener per node: {internal}"
    for name, service in framewire_services().items():
        servers = {s.strip() for s in container_env(service)["FRAMEWIRE_BOOTSTRAP_SERVERS"]
                   .split(",")}
        assert servers <= internal, f"{name}: {servers - internal} is no Kafka node's listener"
        assert servers == internal, f"{name}: list every node, {internal - servers} missing"


def test_kafka_listeners_for_the_host_are_published():
    for node, env in kafka_nodes().items():
        published = {str(p).split(":")[-1] for p in SERVICES[node].get("ports", [])}
        for host, port in listeners(env["KAFKA_ADVERTISED_LISTENERS"]).values():
            if host in {"localhost", "127.0.0.1"}:
                assert str(port) in published, f"{node}: advertises {host}:{port}, not published"


def test_kafka_quorum_voters_match_each_nodes_controller_listener():
    nodes = kafka_nodes()
    expected = set()
    for node, env in nodes.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, node
        controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        _, port = listeners(env["KAFKA_LISTENERS"])[controller]
        expected.add(f"{env['KAFKA_NODE_ID']}@{node}:{port}")
        names = set(listeners(env["KAFKA_LISTENERS"]))
        protocols = {item.split(":")[0] for item in
                     env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
        assert names <= protocols, f"{node}: no security protocol for {names - protocols}"
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in names - {controller}, node
    assert len({env["KAFKA_NODE_ID"] for env in nodes.values()}) == len(nodes), "node ids repeat"
    assert len({env["CLUSTER_ID"] for env in nodes.values()}) == 1, "nodes in different clusters"
    for node, env in nodes.items():
        voters = set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == expected, f"{node}: voters {sorted(voters)}, nodes say {sorted(expected)}"


def test_replication_survives_one_kafka_node_down(monkeypatch):
    nodes = kafka_nodes()
    for node, env in nodes.items():
        for rf_key, isr_key in [("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", None),
                                ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                                 "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"),
                                ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS")]:
            rf = int(env[rf_key])
            assert 1 < rf <= len(nodes), f"{node}: {rf_key}={rf} with {len(nodes)} nodes"
            if isr_key:
                assert int(env[isr_key]) < rf, f"{node}: {isr_key} leaves no node to lose"
    for name, service in framewire_services().items():
        rf, isr = settings_of(service, monkeypatch).replication(len(nodes))
        assert isr < rf <= len(nodes), f"{name}: topics of {rf} replicas, {isr} in sync"


def test_kafka_nodes_keep_their_data_in_named_volumes():
    used = set()
    for node, env in kafka_nodes().items():
        sources = [s for s, target in mounts(SERVICES[node]) if target == env["KAFKA_LOG_DIRS"]]
        assert sources, f"{node}: KAFKA_LOG_DIRS is not a volume; data would go with the container"
        assert sources[0] in COMPOSE.get("volumes", {}), f"{node}: {sources[0]} is not declared"
        assert sources[0] not in used, f"{node} shares volume {sources[0]} with another node"
        used.add(sources[0])


# --- observability ---------------------------------------------------------------------------


def test_prometheus_scrapes_every_framewire_service_on_its_metrics_port():
    [prometheus] = services_with_image("prom/prometheus").values()
    config = yaml.safe_load(mounted_file(prometheus, PROMETHEUS_CONFIG).read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets |= {tuple(t.rsplit(":", 1)) for t in static["targets"]}
        for dns in job.get("dns_sd_configs", []):
            targets |= {(name, str(dns["port"])) for name in dns["names"]}
    for host, _ in targets:
        assert host in SERVICES, f"prometheus.yml scrapes {host}, not a compose service"
    for name, service in long_running(framewire_services()).items():
        port = container_env(service).get("FRAMEWIRE_METRICS_PORT", "0")
        assert port not in {"0", ""}, f"{name}: pin FRAMEWIRE_METRICS_PORT so it can be scraped"
        assert container_env(service).get("FRAMEWIRE_METRICS_HOST") == "0.0.0.0", \
            f"{name}: metrics listen on loopback by default; Prometheus scrapes from another host"
        assert (name, port) in targets, f"prometheus.yml does not scrape {name}:{port}"


def test_otlp_endpoint_is_a_port_the_collector_listens_on():
    [(collector_name, collector)] = services_with_image("otel/opentelemetry-collector").items()
    [config_path] = [arg.split("=", 1)[1] for arg in collector["command"]
                     if arg.startswith("--config=")]
    config = yaml.safe_load(mounted_file(collector, config_path).read_text())
    for name, service in framewire_services().items():
        env = container_env(service)
        url = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert url.hostname == collector_name, f"{name}: spans go to {url.hostname}"
        # Framewire exports OTLP over HTTP unless told grpc (framewire.telemetry.tracing)
        protocol = "grpc" if env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc" else "http"
        endpoint = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
        assert int(endpoint.rsplit(":", 1)[1]) == url.port, (
            f"{name}: sends to port {url.port}, the collector's {protocol} receiver is {endpoint}")
    for exporter, settings in config["exporters"].items():
        host = settings["endpoint"].split("://")[-1].rsplit(":", 1)[0]
        assert host in SERVICES, f"collector exporter {exporter} sends to {host}, not a service"


def test_grafana_provisions_the_dashboards_data_sources():
    [grafana] = services_with_image("grafana/grafana").values()
    targets = dict((t, s) for s, t in mounts(grafana))
    provisioned = {}
    for target, source in targets.items():
        if target.startswith("/etc/grafana/provisioning/datasources/"):
            for source_config in yaml.safe_load((ROOT / source).read_text())["datasources"]:
                provisioned[source_config["uid"]] = source_config
    for uid, source_config in provisioned.items():
        host = urlsplit(source_config["url"]).hostname
        assert host in SERVICES, f"data source {uid} reads {host}, not a compose service"
    [(dashboard_target, dashboard)] = [(t, s) for t, s in targets.items() if s.endswith(".json")]
    wanted = {panel["datasource"]["uid"] for panel in
              json.loads((ROOT / dashboard).read_text())["panels"] if "datasource" in panel}
    assert wanted <= set(provisioned), f"dashboard uses data sources {wanted - set(provisioned)}"
    folders = set()
    for target, source in targets.items():
        if target.startswith("/etc/grafana/provisioning/dashboards/"):
            providers = yaml.safe_load((ROOT / source).read_text())["providers"]
            folders |= {p["options"]["path"].rstrip("/") for p in providers}
    assert str(Path(dashboard_target).parent) in folders, "no provider loads the dashboard"


# --- image, dependencies, files --------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_as_a_non_root_user():
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "one stage builds, a slim one runs: build tools stay out"
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image runs as root"
    assert image_exec_form("ENTRYPOINT") == ["framewire"]
    # the runtime's Python is one the project supports
    version = froms[-1].split(":")[1].split("-")[0]
    assert version in SpecifierSet(PYPROJECT["project"]["requires-python"]), froms[-1]


def test_dockerfile_copies_only_what_the_build_context_sends():
    ignored = [line.strip().lstrip("/") for line in (ROOT / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")]
    for keyword, args in dockerfile_instructions():
        words = args.split()
        if keyword != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words[:-1] if not w.startswith("--")]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            parts = Path(source).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            hits = [p for p in ignored for x in prefixes if fnmatch.fnmatch(x, p)]
            assert not hits, f"COPY {source}, but .dockerignore leaves it out ({hits})"


def test_pip_install_ships_every_framewire_package():
    # the image installs with `pip install .` (not editable): a package missing from
    # pyproject's list is missing from the image, e.g. the `framewire` command itself
    tool = PYPROJECT["tool"]["setuptools"]
    listed = set(tool["packages"])
    for package, folder in tool["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((package, *relative))
            assert name in listed, (f"{name} ({init.parent.relative_to(ROOT)}) is not in "
                                    "[tool.setuptools] packages of pyproject.toml")


def test_depends_on_names_existing_services_with_a_way_to_tell_they_are_ready():
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for other, rule in depends.items():
            assert other in SERVICES, f"{name} depends on {other}, which is not a service"
            condition = rule.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[other], f"{name} waits for {other} to be healthy"
            elif condition == "service_completed_successfully":
                assert str(SERVICES[other].get("restart", "no")) == "no", f"{other} never ends"
            else:
                assert condition == "service_started", f"{name}: unknown condition {condition}"
    topics = [n for n, s in framewire_services().items() if parse_cli(argv_of(s)[1:])[0] ==
              ["topics"]]
    assert topics, "no one-shot `framewire topics` service creates the topics"
    for name, service in long_running(framewire_services()).items():
        conditions = {other: rule.get("condition") for other, rule in
                      service.get("depends_on", {}).items()}
        for node in kafka_nodes():
            assert conditions.get(node) == "service_healthy", f"{name} starts before {node}"
        assert conditions.get(topics[0]) == "service_completed_successfully", (
            f"{name} starts before its topics exist")


def test_every_mounted_file_and_build_input_exists():
    for name, service in SERVICES.items():
        for source, _ in mounts(service):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in COMPOSE.get("volumes", {}), f"{name}: volume {source} undeclared"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_make_up_uses_docker_compose():
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index("up:")
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    assert any("docker compose" in line and "docker-compose.yml" in line for line in recipe), (
        f"make up does not run docker compose on docker-compose.yml: {recipe}")
