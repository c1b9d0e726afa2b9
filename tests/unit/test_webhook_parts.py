"""Webhook parts without a receiver: signatures, URLs, the subscription file, giving up."""

from __future__ import annotations

import hashlib
import hmac
import socket
import stat
from pathlib import Path

import pytest

from framewire.config import load_settings
from framewire.errors import ConfigError
from framewire.gateway.delivery import GIVEN_UP, Subscriber, sign
from framewire.gateway.webhooks import WebhookStore, check_url
from framewire.runtime import StopSignal
from framewire.runtime.heartbeat import Counters


def test_the_signature_is_the_hex_hmac_sha256_of_the_body_with_the_secret():
    body = b'{"frame_id":"F1"}'
    wanted = hmac.new(b"k" * 16, body, hashlib.sha256).hexdigest()
    assert sign("k" * 16, body) == f"sha256={wanted}"
    assert sign("k" * 16, body + b" ") != sign("k" * 16, body)


@pytest.mark.parametrize("url", ["ftp://host/x", "/relative/path", "http://", "hooks.example"])
def test_a_webhook_url_must_be_http_or_https_with_a_host(url: str):
    with pytest.raises(ConfigError, match="http:// or https://"):
        check_url(url)
    check_url("https://hooks.example.net/framewire")


def test_subscriptions_are_kept_private_and_shown_without_secret_or_password(tmp_path: Path):
    store = WebhookStore(tmp_path)
    hook = store.add("https://u:pw@hooks.example.net/x", "door-1", "s" * 32, "token:ab")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.subscriptions() == [hook]
    assert WebhookStore(tmp_path).subscriptions() == [hook]  # read back from the file
    shown = hook.public()
    assert shown["url"] == "https://u:***@hooks.example.net/x" and "secret" not in shown
    assert "pw" not in hook.fault_key
    assert hook.matches("door-1") and not hook.matches("yard-1")
    assert store.remove(hook.webhook_id) == hook and store.remove(hook.webhook_id) is None
    assert store.subscriptions() == []


def test_a_webhook_file_framewire_did_not_write_is_refused_saying_what_to_do(tmp_path: Path):
    store = WebhookStore(tmp_path)
    for text in ("{not json", "[1, 2]", '{"webhooks": [{"url": 1}]}'):
        store.path.write_text(text)
        for call in (store.subscriptions, lambda: store.add("https://h.example/x", None, "s",
                                                             "t"),
                     lambda: store.remove("ab12cd34")):
            with pytest.raises(ConfigError, match="move it away and subscribe again"):
                call()


def test_a_delivery_that_keeps_failing_is_given_up_counted_and_reported(tmp_path: Path):
    with socket.socket() as sock:  # a port nothing listens on: each attempt is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings(home=tmp_path, gateway={"webhook_attempts": 3,
                                                     "webhook_backoff_ms": 10})
    counters = Counters()
    hook = WebhookStore(tmp_path).add(f"http://u:pw@127.0.0.1:{port}/h", None, "s" * 16, "t")
    sub = Subscriber(hook, settings, counters, StopSignal(install=False))
    sub._deliver("d1", b"{}")
    assert (sub.stats.failed_attempts, sub.stats.given_up, sub.stats.delivered) == (3, 1, 0)
    assert counters.drop_reasons == {GIVEN_UP: 1}
    (fault,) = counters.faults
    assert fault.startswith(f"webhook {hook.webhook_id} to http://u:***@127.0.0.1:{port}/h: ")
    assert fault.endswith(", 3 attempts") and ":pw@" not in fault
    sub.close()  # unsubscribed: its fault goes
    assert counters.faults == []
