"""Webhooks: subscriptions to new results and alert changes, and their routes.

Subscriptions are kept in ``FRAMEWIRE_HOME/webhooks.json`` (0600: it holds each one's secret,
which signs its deliveries). A subscription names what it receives in ``events``: ``result``
(the default: each new result of its camera, or of every camera), ``alert`` (each alert
change storage keeps, as ``GET /api/v1/alerts`` shows it), or both. The deliveries (signed
POSTs, retries, positions kept across restarts) are ``framewire.gateway.delivery``'s. A
failing subscription shows as a fault in the gateway's heartbeats (``framewire status``,
``/api/v1/status``); ``GET /api/v1/webhooks`` shows each one's last delivery.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from framewire.broker.security import write_private
from framewire.contracts import CAMERA_ID_PATTERN
from framewire.errors import ConfigError
from framewire.gateway.audit import audit
from framewire.gateway.auth import Admin, who
from framewire.gateway.delivery import WebhookDelivery
from framewire.runtime.heartbeat import Counters
from framewire.secrets import mask_url

if TYPE_CHECKING:
    from framewire.gateway.app import GatewayState

log = logging.getLogger(__name__)

KINDS = ("result", "alert")  # what a subscription can receive


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
