"""The one configuration object: environment (``FRAMEWIRE_*``), an optional YAML file, defaults.

Nested fields use ``__`` in the environment: ``FRAMEWIRE_INFERENCE__BATCH_SIZE=8``.
librdkafka properties pass through unchanged in ``kafka``
(``FRAMEWIRE_KAFKA='{"security.protocol": "SSL"}'`` or the ``kafka:`` mapping in the YAML file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from framewire.analytics.settings import AnalyticsSettings
from framewire.errors import ConfigError
from framewire.secrets import is_secret_setting, masked_value
from framewire.sections import (
    CameraSettings,
    GatewaySettings,
    InferenceSettings,
    IngestSettings,
    PreprocessSettings,
    StageSettings,
    StorageSettings,
    duration_ms,
)

# the sections are framewire.config's too: plug-ins write `from framewire.config import
# StageSettings`
__all__ = ["CameraSettings", "GatewaySettings", "InferenceSettings", "IngestSettings",
           "PreprocessSettings", "Settings", "StageSettings", "StorageSettings", "duration_ms",
           "load_settings"]

# raw frames (a FrameCaptured topic) under privacy mode, unless `retention` names the topic
PRIVATE_RAW_RETENTION = "1h"

# a supervised process whose slot exited this many times within the window is in a crash loop
CRASH_LOOP_EXITS, CRASH_LOOP_WINDOW_S = 3, 300.0

class Settings(BaseSettings):
    """Everything a Framewire process needs to know, validated at start."""

    model_config = SettingsConfigDict(
        env_prefix="FRAMEWIRE_", env_nested_delimiter="__", extra="forbid",
        validate_default=True,
    )

    home: Path = Path(".framewire")
    bootstrap_servers: str = "127.0.0.1:19092"
    embedded_broker: bool = Field(
        True, description="framewire run starts and supervises the broker (of kind `broker`); "
        "false = use the cluster at bootstrap_servers as it is")
    broker: Literal["embedded", "kafka"] = Field(
        "embedded", description="the broker framewire manages: `embedded` (Tansu, memory "
        "only, quickest start) or `kafka` (Apache Kafka in KRaft mode, data in home)")
    broker_nodes: int = Field(1, ge=1, le=9, description="nodes of the managed Apache Kafka "
                              "cluster: node N listens on the bootstrap port + N - 1")
    kafka_heap_mb: int = Field(512, ge=128, le=65_536, description="Java heap of each managed "
                               "Apache Kafka node")
    kafka_security: Literal["plaintext", "sasl_ssl"] = Field(
        "plaintext", description="the managed Apache Kafka cluster's listeners: `sasl_ssl` = "
        "TLS (a CA and node certificate made under home/tls) and SCRAM-SHA-512, one principal "
        "per stage with ACLs allowing it only its own topics and group (docs/kafka.md, "
        "\"TLS and SASL\"); for your own cluster, set the librdkafka properties in `kafka`")
    kafka_principal: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_]{0,39}$", description="the SCRAM user this process "
        "connects as to a `sasl_ssl` cluster; unset = the stage's own for `framewire service "
        "NAME`, `admin` for Framewire's tooling")
    replication_factor: int | None = Field(
        None, ge=1, le=32, description="copies of each partition; unset = min(3, brokers)")
    min_insync_replicas: int | None = Field(
        None, ge=1, le=32, description="copies that must have a record before it is "
        "acknowledged (acks=all); unset = replication factor - 1, at least 1")
    retention: dict[str, str | int] = Field(
        default_factory=dict, description="per logical topic, how long records are kept "
        "(e.g. {\"frames.raw\": \"6h\"}); unset topics keep the retention their stage "
        "declares (`framewire topology`)")
    compression: Literal["auto", "none", "lz4", "zstd", "snappy", "gzip"] = Field(
        "auto", description="producers' compression.type; auto = lz4 for raw pixels, none for "
        "JPEG payloads (they do not compress)")
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="exactly_once: stages produce and commit offsets in one "
        "Kafka transaction (Apache Kafka only); consumers read committed records")
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int | None = Field(
        None, ge=1, le=10_000, description="partitions per data topic; unset = 12, or on the "
        "embedded broker 2 per usable core (4 to 12)")
    schema_registry_url: str | None = None
    schema_registry_auth: dict[str, SecretStr] = Field(
        default_factory=dict, description="properties of the schema registry client, passed "
        "through: basic.auth.user.info (USER:PASSWORD), ssl.ca.location, "
        "ssl.certificate.location, ssl.key.location; kept as SecretStr")
    kafka: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka properties, passed through; secret ones "
        "(sasl.password, ssl.key.password...) are kept as SecretStr and shown masked")
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL; unset = SQLite under home. Shown with its password "
        "masked")
    blob_dir: Path | None = None
    blob_keys_file: Path | None = Field(
        None, description="encrypt blobs at rest (AES-256-GCM) with the keys of this file "
        "(mode 0600), one KEYID:BASE64KEY a line: the first writes, the others are still "
        "read (rotation); unset, and no blob_key = blobs in clear")
    blob_key: SecretStr | None = Field(
        None, description="KEYID:BASE64KEY, the current blob key, from FRAMEWIRE_BLOB_KEY "
        "only (refused in the config file); blob_keys_file keys are still read")
    max_inline_bytes: int = Field(900_000, ge=1024, le=64 * 1024 * 1024)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=1)
    heartbeat_interval_s: float = Field(2.0, gt=0, le=600)
    shutdown_timeout_s: float = Field(20.0, gt=0, le=600)
    ack_timeout_s: float = Field(10.0, gt=0, le=600, description="wait for a batch's acks")
    commit_interval_ms: int = Field(
        100, ge=0, le=60_000, description="commit consumed offsets at most this often while "
        "busy (at once when idle); a crash replays at most this much")
    demo_cameras: int = Field(2, ge=0, le=64)
    demo_fps: float = Field(5.0, gt=0, le=120)
    demo_width: int = Field(960, ge=64, le=7680)
    demo_height: int = Field(540, ge=64, le=4320)
    cameras: list[CameraSettings] = Field(default_factory=list)
    broker_memory_budget_mb: int = Field(
        2048, ge=0, description="recycle the embedded broker above this RSS; 0 = never")
    trace_sample_ratio: float = Field(1.0, ge=0, le=1, description="0 = tracing off")
    metrics_host: str = Field(
        "127.0.0.1", description="address the Prometheus /metrics server listens on: loopback "
        "by default (it has no authentication); 0.0.0.0 to be scraped from other hosts")
    metrics_port: int | None = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port; 0 = any free port, None = off")
    camera_stall_s: float = Field(10.0, gt=0, description="no frame for this long: stalled")
    stall_s: float = Field(30.0, gt=0, description="lag with no commit for this long: stalled")
    restart_count: int = Field(0, ge=0, description="set by the supervisor for its children")
    recent_crashes: int = Field(0, ge=0, description="set by the supervisor: how many times "
                                "this process's slot exited in the last 5 minutes")
    data_retention: str = Field(
        "30d", description="how long results, detections, spans, stored frames and dead-letter "
        "payloads are kept (per camera: cameras[].retention); the storage service's sweeper "
        "deletes what is older every sweep_interval_s")
    log_max_mb: int = Field(50, ge=1, le=100_000, description="framewire run rotates a "
                            "process's log past this size (logs/NAME.log.1 ...)")
    log_backups: int = Field(3, ge=0, le=100, description="rotated copies kept per log")
    sweep_interval_s: float = Field(300.0, gt=0, le=86_400, description="how often storage "
                                    "sweeps what is past its retention")
    poison_pill_limit: int = Field(
        3, ge=1, le=20, description="a record is dead-lettered after its stage's process died "
        "this many times while working on it (crash_loop), or after this many failed attempts "
        "while other records succeed (retries_exhausted); its partition then moves on")
    embedded_broker_host: str | None = Field(
        None, description="address the embedded broker listens on; unset = the bootstrap "
        "address, which must then be a loopback one (it has no authentication); 0.0.0.0 to "
        "serve other hosts (it advertises the bootstrap address)")
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    preprocess: PreprocessSettings = Field(default_factory=PreprocessSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    stages: list[str] = Field(
        default_factory=list, description="more stage declarations, as module:attribute of a "
        "StageSpec, beside those registered in the framewire.stages entry-point group")
    stage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="settings of stages that are not Framewire's own, "
        "per stage name (e.g. FRAMEWIRE_STAGE_OPTIONS__CONFIDENT__MIN_SCORE=0.6)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    privacy_mode: bool = Field(
        True, description="keep raw frames off the blob store (they travel inside their Kafka "
        "records, frames.raw keeps them 1h unless `retention` says otherwise) and blur every "
        "face the model finds before a frame is stored; per camera: cameras[].privacy_mode")
    accept_agpl_models: bool = Field(
        False, description="start a model whose manifest licence is AGPL (its terms reach a "
        "site serving its results over a network); `framewire licenses` lists what runs")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_have_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"{server!r} is not HOST:PORT; write e.g. 127.0.0.1:9092 or a comma list"
                )
        return value

    @field_validator("kafka")
    @classmethod
    def _kafka_secrets_hidden(cls, value: dict[str, Any]) -> dict[str, Any]:
        # client_config() reveals them for librdkafka; everything else sees SecretStr
        return {k: SecretStr(str(v)) if is_secret_setting(k) and not isinstance(v, SecretStr)
                else v for k, v in value.items()}

    @field_validator("data_retention")
    @classmethod
    def _data_retention_is_a_duration(cls, value: str) -> str:
        if duration_ms(value) <= 0:
            raise ValueError(f"{value!r}: give a positive duration such as 30d or 12h")
        return value

    @field_validator("retention")
    @classmethod
    def _retention_is_positive(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        for name, duration in value.items():
            if duration_ms(duration) == 0 or duration_ms(duration) < -1:
                raise ValueError(f"retention of {name} is {duration!r}: write a positive "
                                 "duration such as 6h, or -1 to keep records forever")
        return value

    @model_validator(mode="after")
    def _stages_fit(self) -> Settings:
        """The stages (with those of ``stages``) fit together; every named topic and stage
        option belongs to one of them."""
        from framewire.topology import stage_settings, topology

        site = topology(self)
        for name in self.retention:
            if name not in site.topics:
                raise ValueError(f"unknown topic {name!r} in retention; known: "
                                 f"{', '.join(site.topics)}")
        for name in self.stage_options:
            stage_settings(self, site.stage(name))
        return self

    @model_validator(mode="after")
    def _blob_keys_readable(self) -> Settings:
        from framewire.store.blobs import load_blob_keys

        load_blob_keys(self.blob_key.get_secret_value() if self.blob_key else None,
                       self.blob_keys_file)
        return self

    @model_validator(mode="after")
    def _replication_fits(self) -> Settings:
        rf, isr = self.replication_factor, self.min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(f"min_insync_replicas={isr} is more than replication_factor={rf}: "
                             "no write could ever be acknowledged; lower it to at most "
                             f"{rf} (FRAMEWIRE_MIN_INSYNC_REPLICAS)")
        if self.manages_kafka and rf is not None and rf > self.broker_nodes:
            raise ValueError(f"replication_factor={rf} needs at least {rf} brokers but "
                             f"broker_nodes={self.broker_nodes}; set FRAMEWIRE_BROKER_NODES={rf} "
                             "or lower FRAMEWIRE_REPLICATION_FACTOR")
        if self.kafka_security != "plaintext" and not self.manages_kafka:
            raise ValueError(f"kafka_security={self.kafka_security} secures the Apache Kafka "
                             "cluster framewire manages (FRAMEWIRE_BROKER=kafka); for your own "
                             "cluster set the librdkafka properties in `kafka` instead "
                             "(security.protocol, sasl.mechanisms, sasl.username, "
                             "sasl.password, ssl.ca.location)")
        if self.delivery == "exactly_once" and self.on_tansu:
            raise ValueError("delivery=exactly_once needs Kafka transactions, which the "
                             "embedded broker does not offer; set FRAMEWIRE_BROKER=kafka (or "
                             "point FRAMEWIRE_BOOTSTRAP_SERVERS at an Apache Kafka cluster with "
                             "FRAMEWIRE_EMBEDDED_BROKER=false)")
        return self

    @property
    def on_tansu(self) -> bool:
        """The site runs on the embedded Tansu broker (memory only, no transactions)."""
        return self.embedded_broker and self.broker == "embedded"

    @property
    def broker_kind(self) -> Literal["embedded", "kafka", "external"]:
        """The broker behind the site: embedded (Tansu), kafka (Apache Kafka framewire
        manages) or external (a cluster of the user's)."""
        if self.on_tansu:
            return "embedded"
        return "kafka" if self.manages_kafka else "external"

    @property
    def manages_kafka(self) -> bool:
        """``framewire run`` starts an Apache Kafka cluster of its own."""
        return self.embedded_broker and self.broker == "kafka"

    @property
    def client_bootstrap_servers(self) -> str:
        """Servers clients bootstrap from: every node of a cluster framewire manages (so one
        node down never keeps a client out), else ``bootstrap_servers`` as given."""
        if not self.manages_kafka or self.broker_nodes == 1:
            return self.bootstrap_servers
        host, _, port = self.bootstrap_servers.split(",")[0].strip().rpartition(":")
        return ",".join(f"{host}:{int(port) + i}" for i in range(self.broker_nodes))

    def retention_ms(self, name: str) -> int:
        """How long the logical topic ``name`` keeps records, in milliseconds: as
        ``retention`` sets it, else raw frames ``PRIVATE_RAW_RETENTION`` under privacy mode,
        else as its stage declares."""
        return duration_ms(self.topic_retention(name))

    def topic_retention(self, name: str) -> str | int:
        """How long the logical topic ``name`` keeps records, as written (``"24h"``, or a
        number of milliseconds): see ``retention_ms``."""
        from framewire.contracts import FrameCaptured
        from framewire.topology import topology

        topic = topology(self).topic(name)
        if name in self.retention:
            return self.retention[name]
        if self.privacy_mode and topic.contract is FrameCaptured:
            return PRIVATE_RAW_RETENTION
        return topic.retention

    def privacy_for(self, camera_id: str,
                    cameras: Mapping[str, CameraSettings] | None = None) -> bool:
        """Whether ``camera_id``'s frames are captured in privacy mode. ``cameras``: the
        cameras the site runs now (the cameras topic over the setting); unset = the setting's."""
        camera = self.camera(camera_id, cameras)
        own = camera.privacy_mode if camera is not None else None
        return self.privacy_mode if own is None else own

    def camera(self, camera_id: str, cameras: Mapping[str, CameraSettings] | None = None
               ) -> CameraSettings | None:
        """``camera_id``'s settings among ``cameras`` (unset = the ``cameras`` setting)."""
        if cameras is not None:
            return cameras.get(camera_id)
        return next((c for c in self.cameras if c.camera_id == camera_id), None)

    def replication(self, brokers: int) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) for a cluster of ``brokers`` brokers."""
        rf = self.replication_factor or min(3, brokers)
        isr = self.min_insync_replicas or max(1, rf - 1)
        return rf, min(isr, rf)

    @property
    def resolved_database_url(self) -> str:
        """The database to use: configured, or SQLite under ``home``."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.home / 'framewire.db').resolve()}"

    @property
    def resolved_span_database_url(self) -> str:
        """Where the embedded span store keeps spans: beside a SQLite database, in a file of
        its own (every service exports spans; sharing the results file made storage wait for
        their write lock: p99 at 50 % load 131 → 110 ms without them); the same server
        database otherwise."""
        url = self.resolved_database_url
        if url.startswith("sqlite:///") and url.endswith(".db"):
            return url[: -len(".db")] + "-spans.db"
        return url

    @property
    def topic_partitions(self) -> int:
        """Partitions of each data topic.

        The embedded broker holds every topic on this host and makes them again at each
        start, so its topics follow this host's cores: replicas of a stage beyond the cores
        add nothing, and each partition costs the broker work on every fetch (12 instead of
        4 on 2 cores: 1.5 % of full speed, 0.026 cores on an idle site).
        """
        if self.partitions is not None:
            return self.partitions
        if self.on_tansu:
            from framewire.procutil import usable_cores

            return min(12, max(4, 2 * usable_cores()))
        return 12

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.home / "blobs"

    def topic(self, name: str) -> str:
        """The full topic name for a logical topic (``frames.raw`` ...), with the prefix."""
        from framewire.topology import topology

        topology(self).topic(name)  # KeyError naming the known topics
        return f"{self.topic_prefix}{name}"

    def group(self, service: str) -> str:
        """The consumer group of a service."""
        return f"{self.topic_prefix}framewire-{service}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # precedence: explicit arguments > environment > YAML file > defaults
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``FRAMEWIRE_CONFIG``, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FRAMEWIRE_CONFIG")
        if not path:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"FRAMEWIRE_CONFIG={path!r}: no such file; fix the path or unset the variable"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"FRAMEWIRE_CONFIG={path!r} is not valid YAML: {exc}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"FRAMEWIRE_CONFIG={path!r} must hold a mapping of settings")
        if "blob_key" in data:
            raise ConfigError(f"FRAMEWIRE_CONFIG={path!r} holds blob_key in clear, which is "
                              "refused: remove it, and give the key as FRAMEWIRE_BLOB_KEY or in "
                              "a blob_keys_file of mode 0600")
        return data


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings; a bad value raises ConfigError naming field, value and fix."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad field: where it came from, the value given and what is expected."""
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if not loc:  # a rule across several settings: its message names them and the fix
            lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
            continue
        env = "FRAMEWIRE_" + "__".join(str(p) for p in err["loc"]).upper()
        value = masked_value(str(err["loc"][-1]), err.get("input"))
        lines.append(
            f"  {loc} = {value!r}: {err['msg']} (set {env} or '{loc}' in the FRAMEWIRE_CONFIG file)"
        )
    return "\n".join(lines)
