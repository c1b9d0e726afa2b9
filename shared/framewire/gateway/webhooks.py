"""Webhooks: each new result POSTed as signed JSON to the subscriptions of its camera.

Subscriptions are kept in ``FRAMEWIRE_HOME/webhooks.json`` (0600: it holds each one's secret,
which signs its deliveries). A delivery worker in the gateway process finds new results as
the live stream does (``results_after``, once stored for ``gateway.stream_settle_ms``) and
hands each one to the worker thread of every matching subscription, which POSTs it with
``X-Framewire-Signature: sha256=<HMAC-SHA256 of the body with the secret>``, retrying with
exponential backoff; a delivery that keeps failing is given up and counted. A failing
subscription shows as a fault in the gateway's heartbeats (``framewire status``,
``/api/v1/status``); ``GET /api/v1/webhooks`` shows each one's last delivery. Where the
worker stands is kept in ``FRAMEWIRE_HOME/webhooks.position`` while there are subscriptions,
so results stored while the gateway was down are delivered when it is back.

A subscription names what it receives in ``events``: ``result`` (the default), ``alert`` (each
alert change storage keeps, as ``GET /api/v1/alerts`` shows it, from
``FRAMEWIRE_HOME/webhooks.alerts.position`` on), or both; ``X-Framewire-Event`` says which
one a delivery is, signed the same way.
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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from framewire import __version__
from framewire.broker.security import write_private
from framewire.config import Settings
from framewire.contracts import CAMERA_ID_PATTERN
from framewire.errors import ConfigError
from framewire.gateway.audit import audit
from framewire.gateway.auth import Admin, who
from framewire.gateway.results import StreamPosition, result_json, results_after
from framewire.runtime import StopSignal
from framewire.runtime.heartbeat import Counters
from framewire.secrets import mask_url, mask_urls_in
from framewire.store.analytics import RowPosition, alerts_after
from framewire.store.db import Database

if TYPE_CHECKING:
    from framewire.gateway.app import GatewayState

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
QUEUE_LIMIT = 1000  # deliveries waiting per subscription; more are dropped and counted
POLL_S = 0.5
BATCH = 100
KINDS = ("result", "alert")  # what a subscription can receive
GIVEN_UP = "webhook_given_up"  # the drop reason of a delivery given up
def _report(counters: Counters, key: str, fault: str | None, given_up: bool = False) -> None:
    counters.set_fault(key, fault)
    if given_up:
        counters.drop(GIVEN_UP)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Framewire-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Webhook:
    """A subscription: where results of ``camera`` (None: every camera) are POSTed."""

    webhook_id: str
    url: str
    camera: str | None
    secret: str
    created_at: str
    created_by: str
    events: tuple[str, ...] = ("result",)  # of KINDS; older files have none: results

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", tuple(self.events))  # a JSON list, read back

    def matches(self, camera_id: str, kind: str = "result") -> bool:
        return kind in self.events and (self.camera is None or self.camera == camera_id)

    @property
    def fault_key(self) -> str:
        return f"webhook {self.webhook_id} to {mask_url(self.url)}"

    def public(self) -> dict[str, Any]:
        """What the API shows of it: never the secret, the URL's credentials masked."""
        return {"webhook_id": self.webhook_id, "url": mask_url(self.url),
                "camera": self.camera, "events": list(self.events),
                "created_at": self.created_at,
                "created_by": self.created_by}


def check_url(url: str) -> None:
    """ConfigError unless ``url`` is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhook URL {mask_url(url)!r}: give an http:// or https:// URL "
                          "with a host")


class WebhookStore:
    """The subscriptions, in one JSON file under FRAMEWIRE_HOME (0600, written atomically)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "webhooks.json"
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int], list[Webhook]] | None = None

    def subscriptions(self) -> list[Webhook]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cache is None or self._cache[0] != stamp:
                self._cache = (stamp, self._parse(self.path.read_text()))
            return list(self._cache[1])

    def _parse(self, text: str) -> list[Webhook]:
        try:
            return [Webhook(**h) for h in json.loads(text or "{}").get("webhooks", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{self.path} is not a webhook file Framewire wrote ({exc}); "
                              "move it away and subscribe again") from None

    def _write(self, hooks: list[Webhook]) -> None:
        write_private(self.path, json.dumps({"webhooks": [asdict(h) for h in hooks]}, indent=1))

    def add(self, url: str, camera: str | None, secret: str, created_by: str,
            events: tuple[str, ...] = ("result",)) -> Webhook:
        hook = Webhook(secrets.token_hex(4), url, camera, secret,
                       datetime.now(UTC).isoformat(timespec="seconds"), created_by, events)
        with self._lock:
            hooks = self._load_locked()
            self._write([*hooks, hook])
        return hook

    def remove(self, webhook_id: str) -> Webhook | None:
        with self._lock:
            hooks = self._load_locked()
            gone = next((h for h in hooks if h.webhook_id == webhook_id), None)
            if gone is not None:
                self._write([h for h in hooks if h is not gone])
        return gone

    def _load_locked(self) -> list[Webhook]:
        self._cache = None
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return self._parse(text)


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


class WebhookRequest(BaseModel):
    """A subscription: where to POST results, of which camera, signed with which secret."""

    url: str = Field(max_length=2000, description="http:// or https:// URL that receives "
                     "each result as a JSON POST")
    camera: str | None = Field(None, description="only this camera's results (default: "
                               "every camera's)")
    secret: str | None = Field(None, min_length=16, max_length=200, description="the HMAC "
                               "key of X-Framewire-Signature; generated (and returned once) "
                               "when not given")
    events: list[Literal["result", "alert"]] = Field(
        ["result"], min_length=1, description="what it receives: result (each new result), "
        "alert (each alert firing or resolved), or both")


def register(api: APIRouter, state: GatewayState) -> None:
    """The webhook routes on ``api``, and the delivery worker (until ``state.stop``)."""
    store = WebhookStore(state.home)
    counters = state.pusher.ingest.publisher.counters if state.pusher else Counters()
    delivery = WebhookDelivery(state.settings, state.db, store, counters, state.stop)
    delivery.start()

    def shown(hook: Webhook) -> dict[str, Any]:
        stats = delivery.stats(hook.webhook_id)
        return {**hook.public(), "delivery": asdict(stats)}

    @api.get("/webhooks", tags=["webhooks"])
    def list_webhooks(_: Admin) -> list[dict[str, Any]]:
        """The subscriptions (URLs masked, never the secrets), each with how its deliveries
        went since the gateway started."""
        from fastapi.encoders import jsonable_encoder

        return jsonable_encoder([shown(h) for h in store.subscriptions()])

    @api.post("/webhooks", tags=["webhooks"], status_code=201, responses={422: {}})
    def create_webhook(request: WebhookRequest, token: Admin) -> JSONResponse:
        """Subscribe a URL to new results (of one camera, or all). The answer holds the
        generated `secret` once, when none was given."""
        try:
            check_url(request.url)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        if request.camera is not None and not CAMERA_ID_PATTERN.match(request.camera):
            raise HTTPException(422, f"camera {request.camera!r}: use 1 to 128 letters, "
                                "digits and . _ : -")
        secret = request.secret or secrets.token_urlsafe(32)
        hook = store.add(request.url, request.camera, secret, who(token),
                         tuple(dict.fromkeys(request.events)))
        delivery.sync()
        audit(state.home, who(token), "webhook.create", webhook_id=hook.webhook_id,
              url=mask_url(hook.url), camera=hook.camera, events=list(hook.events))
        from fastapi.encoders import jsonable_encoder

        answer = shown(hook) | ({"secret": secret} if request.secret is None else {})
        return JSONResponse(jsonable_encoder(answer), 201)

    @api.delete("/webhooks/{webhook_id}", tags=["webhooks"], status_code=204,
                responses={404: {}})
    def delete_webhook(webhook_id: str, token: Admin) -> Response:
        """Unsubscribe: deliveries waiting or being retried for it are dropped."""
        gone = store.remove(webhook_id)
        if gone is None:
            raise HTTPException(404, f"no webhook {webhook_id}; GET /api/v1/webhooks lists them")
        delivery.sync()
        audit(state.home, who(token), "webhook.delete", webhook_id=webhook_id,
              url=mask_url(gone.url), camera=gone.camera)
        return Response(status_code=204)
