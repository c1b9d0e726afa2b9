"""/metrics has no authentication: it listens on loopback unless the settings say otherwise."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from framewire.config import load_settings
from framewire.telemetry.metrics import start_metrics_server


def listening_address(port: int) -> str:
    """The address a local TCP socket listens on for ``port``, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            return ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_metrics_listen_where_the_setting_says(host: str):
    port = start_metrics_server(0, host)
    assert port is not None
    assert listening_address(port) == host
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200


def test_loopback_is_the_default():
    assert load_settings().metrics_host == "127.0.0.1"


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_the_embedded_broker_listens_on_loopback_by_default(tmp_path):
    from framewire.broker.client import EmbeddedBroker, embedded_listen_host
    from tests.fixtures.common import free_port

    settings = load_settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    port = int(settings.bootstrap_servers.rpartition(":")[2])
    broker = EmbeddedBroker("127.0.0.1", port, tmp_path / "broker.log",
                            listen_host=embedded_listen_host(settings))
    broker.start()
    try:
        assert listening_address(port) == "127.0.0.1"
    finally:
        broker.stop()


def test_a_bootstrap_address_a_loopback_broker_cannot_answer_is_refused_at_start():
    from framewire.broker.client import embedded_listen_host
    from framewire.errors import ConfigError

    with pytest.raises(ConfigError, match="FRAMEWIRE_EMBEDDED_BROKER_HOST=0.0.0.0"):
        embedded_listen_host(load_settings(bootstrap_servers="192.0.2.10:9092"))
    served = load_settings(bootstrap_servers="192.0.2.10:9092", embedded_broker_host="0.0.0.0")
    assert embedded_listen_host(served) == "0.0.0.0"
    # a loopback bootstrap address is where it listens, whichever loopback address it is
    for host in ("127.0.0.1", "localhost", "127.0.1.1", "[::1]"):
        assert embedded_listen_host(load_settings(bootstrap_servers=f"{host}:9092")) == \
            host.strip("[]")
