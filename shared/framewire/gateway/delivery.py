"""Webhook deliveries: new results and alert changes POSTed, signed, to each subscription.

``WebhookDelivery`` (a thread in the gateway process) finds results stored since it last looked
as the live stream does (``results_after``, once stored for ``gateway.stream_settle_ms``), and
alert changes likewise, and hands each to the ``Subscriber`` of every matching subscription: a
thread per subscription that POSTs in order with ``X-Framewire-Signature: sha256=<HMAC-SHA256
of the body with the secret>`` and ``X-Framewire-Event``, retrying with exponential backoff;
a delivery that keeps failing is given up and counted. Where the worker stands is kept in
``FRAMEWIRE_HOME/webhooks.position`` (and ``webhooks.alerts.position``) while there are
subscriptions. The subscriptions themselves and their routes: ``framewire.gateway.webhooks``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from framewire import __version__
from framewire.broker.security import write_private
from framewire.config import Settings
from framewire.gateway.results import StreamPosition, result_json, results_after
from framewire.runtime import StopSignal
from framewire.runtime.heartbeat import Counters
from framewire.secrets import mask_url, mask_urls_in
from framewire.store.analytics import RowPosition, alerts_after
from framewire.store.db import Database

if TYPE_CHECKING:
    from framewire.gateway.webhooks import Webhook, WebhookStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
QUEUE_LIMIT = 1000  # deliveries waiting per subscription; more are dropped and counted
POLL_S = 0.5
BATCH = 100
GIVEN_UP = "webhook_given_up"  # the drop reason of a delivery given up


def _report(counters: Counters, key: str, fault: str | None, given_up: bool = False) -> None:
    counters.set_fault(key, fault)
    if given_up:
        counters.drop(GIVEN_UP)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Framewire-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()




@dataclass
class DeliveryStats:
    """How a subscription's deliveries went, since the gateway started."""

    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    dropped: int = 0  # not queued: QUEUE_LIMIT deliveries were already waiting
    last_status: int | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    last_delivered_at: datetime | None = None
    pending: int = 0


class Subscriber:
    """One subscription's deliveries, in order, in a thread of its own: a slow or failing
    receiver holds up only its own."""

    def __init__(self, hook: Webhook, settings: Settings, counters: Counters,
                 stop: StopSignal) -> None:
        self.hook, self.settings, self.counters, self.stop = hook, settings, counters, stop
        self.stats = DeliveryStats()
        self.queue: queue.Queue[tuple[str, bytes, str]] = queue.Queue(QUEUE_LIMIT)
        self.gone = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"webhook-{hook.webhook_id}",
                                       daemon=True)

    def offer(self, delivery_id: str, body: bytes, kind: str = "result") -> None:
        try:
            self.queue.put_nowait((delivery_id, body, kind))
        except queue.Full:
            self.stats.dropped += 1
            _report(self.counters, self.hook.fault_key,
                    f"{QUEUE_LIMIT} deliveries waiting, newer results dropped", given_up=True)

    def close(self) -> None:
        """The subscription was removed: stop, clear its fault."""
        self.gone.set()
        _report(self.counters, self.hook.fault_key, None)

    def _ended(self) -> bool:
        return self.stop.is_set or self.gone.is_set()

    def _run(self) -> None:
        while not self._ended():
            try:
                delivery_id, body, kind = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._deliver(delivery_id, body, kind)
            self.stats.pending = self.queue.qsize()

    def _deliver(self, delivery_id: str, body: bytes, kind: str = "result") -> None:
        cfg = self.settings.gateway
        for attempt in range(1, cfg.webhook_attempts + 1):
            if self._ended():
                return
            self.stats.last_attempt_at = datetime.now(UTC)
            status, error = post(self.hook, delivery_id, body, cfg.webhook_timeout_s, kind)
            if self.gone.is_set():  # unsubscribed meanwhile: nothing more to report
                return
            self.stats.last_status = status
            if error is None:
                self.stats.delivered += 1
                self.stats.last_error = None
                self.stats.last_delivered_at = self.stats.last_attempt_at
                _report(self.counters, self.hook.fault_key, None)
                return
            self.stats.failed_attempts += 1
            self.stats.last_error = error
            _report(self.counters, self.hook.fault_key, f"{error}, {attempt} attempts")
            if attempt < cfg.webhook_attempts:
                self._pause(min(cfg.webhook_backoff_ms / 1000 * 2 ** (attempt - 1),
                                MAX_BACKOFF_S))
        self.stats.given_up += 1
        _report(self.counters, self.hook.fault_key, f"{self.stats.last_error}, "
                f"{cfg.webhook_attempts} attempts", given_up=True)
        log.warning("webhook delivery given up", extra={
            "webhook_id": self.hook.webhook_id, "url": mask_url(self.hook.url),
            "delivery": delivery_id, "attempts": cfg.webhook_attempts,
            "error": self.stats.last_error})

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._ended() and (left := deadline - time.monotonic()) > 0:
            self.stop.wait(min(left, 0.2))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # a redirect would turn the POST into a GET without its body: it counts as a failure
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post(hook: Webhook, delivery_id: str, body: bytes, timeout_s: float,
         kind: str = "result") -> tuple[int | None, str | None]:
    """POST one delivery: the HTTP status (None when none came) and the error (None: 2xx)."""
    parts = urllib.parse.urlsplit(hook.url)
    headers = {"Content-Type": "application/json", "User-Agent": f"framewire/{__version__}",
               "X-Framewire-Event": kind, "X-Framewire-Delivery": delivery_id,
               "X-Framewire-Signature": sign(hook.secret, body)}
    url = hook.url
    if parts.username is not None:  # credentials in the URL: sent as basic auth
        unquote = urllib.parse.unquote
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=timeout_s) as answer:
            return answer.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, mask_urls_in(f"{type(reason).__name__}: {reason}")


class WebhookDelivery:
    """Finds results stored since it last looked and hands each to its subscribers."""

    def __init__(self, settings: Settings, db: Database, store: WebhookStore,
                 counters: Counters, stop: StopSignal) -> None:
        self.settings, self.db, self.store = settings, db, store
        self.counters, self.stop = counters, stop
        self.position_path = settings.home.resolve() / "webhooks.position"
        self.alerts_path = settings.home.resolve() / "webhooks.alerts.position"
        self.subscribers: dict[str, Subscriber] = {}
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="webhooks", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stats(self, webhook_id: str) -> DeliveryStats:
        with self._lock:
            sub = self.subscribers.get(webhook_id)
        return sub.stats if sub is not None else DeliveryStats()

    def sync(self) -> list[Webhook]:
        """Start a worker for each new subscription, stop those removed; the subscriptions."""
        hooks = self.store.subscriptions()
        with self._lock:
            for webhook_id in set(self.subscribers) - {h.webhook_id for h in hooks}:
                self.subscribers.pop(webhook_id).close()
            for hook in hooks:
                if hook.webhook_id not in self.subscribers:
                    sub = Subscriber(hook, self.settings, self.counters, self.stop)
                    self.subscribers[hook.webhook_id] = sub
                    sub.thread.start()
        return hooks

    def _start_position(self) -> StreamPosition:
        try:
            return StreamPosition.parse(self.position_path.read_text())
        except (FileNotFoundError, ValueError):
            return StreamPosition(datetime.now(UTC))

    def _run(self) -> None:
        position = self._start_position()
        try:
            alerts_at = RowPosition.parse(self.alerts_path.read_text())
        except (FileNotFoundError, ValueError):
            alerts_at = RowPosition(datetime.now(UTC))
        while not self.stop.wait(POLL_S):
            try:
                position = self.poll(position)
                alerts_at = self.poll_alerts(alerts_at)
            except Exception as exc:  # the database away, a bad file: said, and tried again
                log.warning("webhook deliveries paused", extra={"error": str(exc)})
                _report(self.counters, "webhooks", f"new results not read ({exc}); retrying")
            else:
                _report(self.counters, "webhooks", None)

    def poll(self, position: StreamPosition) -> StreamPosition:
        """Hand the results stored after ``position`` to their subscribers; the new position."""
        hooks = self.sync()
        until = datetime.now(UTC) - timedelta(
            milliseconds=self.settings.gateway.stream_settle_ms)
        if not any("result" in h.events for h in hooks):  # results stored meanwhile: for no one
            self.position_path.unlink(missing_ok=True)
            return max(position, StreamPosition(until))
        while True:
            batch = results_after(self.db, position, until, None, BATCH)
            for result, row, at in batch:
                self._offer("result", result.camera_id, result_json(result, row))
                position = at
            if batch:
                write_private(self.position_path, position.event_id + "\n")
            if len(batch) < BATCH or self.stop.is_set:
                return position


    def _offer(self, kind: str, camera_id: str, data: dict[str, Any]) -> None:
        """One delivery of ``data`` to every subscription that takes ``kind`` of the camera."""
        body = json.dumps(data, separators=(",", ":")).encode()
        with self._lock:
            for sub in self.subscribers.values():
                if sub.hook.matches(camera_id, kind):
                    sub.offer(secrets.token_hex(8), body, kind)
                    sub.stats.pending = sub.queue.qsize()

    def poll_alerts(self, position: RowPosition) -> RowPosition:
        """Hand the alert changes stored after ``position`` to the subscriptions that take
        alerts (as ``poll`` does results); the new position."""
        until = datetime.now(UTC) - timedelta(
            milliseconds=self.settings.gateway.stream_settle_ms)
        if not any("alert" in h.events for h in self.store.subscriptions()):
            self.alerts_path.unlink(missing_ok=True)
            return max(position, RowPosition(until))
        while True:
            batch = alerts_after(self.db, position, until, None, BATCH)
            for alert, at in batch:
                self._offer("alert", alert["camera_id"], alert)
                position = at
            if batch:
                write_private(self.alerts_path, position.event_id + "\n")
            if len(batch) < BATCH or self.stop.is_set:
                return position
