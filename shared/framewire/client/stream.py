"""``Client.stream()``: new results from the gateway's Server-Sent Events, reconnecting by
itself.

The gateway numbers each event (``<stored_at µs>-<frame id>``) and sends results in that
order; after a dropped connection the stream reconnects with ``Last-Event-ID`` set to the
last event it handed out, so it goes on with the next result stored: none lost, none twice
(as long as the database still keeps them).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import httpx2

from framewire.client.errors import FramewireAPIError, Unavailable, Unreachable, api_error
from framewire.client.models import Result

log = logging.getLogger(__name__)

STREAM_PATH = "/api/v1/results/stream"
KEEPALIVE_S = 15.0  # the gateway's comment line on a quiet stream
MAX_DELAY_S = 30.0  # the longest wait between attempts while the gateway does not answer


class ResultStream(Iterator[Result]):
    """An endless iterator of new results; ``close()`` (or leaving its ``with``) ends it.

    The connection is opened when the stream is made, so results stored from then on come
    out, and a token the gateway refuses raises at once. A dropped connection, a gateway
    that restarts or answers 5xx is retried after the gateway's ``retry:`` (2 s) or
    ``reconnect_delay`` when given, doubling while it fails, up to 30 s; a 4xx answer
    (token revoked, bad Last-Event-ID) raises. ``last_event_id`` is where it stands: give
    it to a later ``Client.stream()`` to go on from there after the program restarts.
    """

    def __init__(self, http: httpx2.Client, camera: str | None = None,
                 last_event_id: str | None = None, reconnect_delay: float | None = None,
                 read_timeout: float = 4 * KEEPALIVE_S) -> None:
        self.camera = camera
        self.last_event_id = last_event_id
        self.reconnects = 0  # how many times the connection was made again
        self._http = http
        self._reconnect_delay = reconnect_delay
        self._retry_s = 2.0  # until the gateway says otherwise
        # a keep-alive comes every 15 s: a read waiting far longer is on a dead connection
        self._timeout = httpx2.Timeout(http.timeout.connect or 10.0, read=read_timeout)
        self._response: httpx2.Response | None = None
        self._events: Iterator[httpx2.ServerSentEvent] | None = None
        self._closed = threading.Event()
        self._connect()

    @property
    def response(self) -> httpx2.Response | None:
        """The HTTP response now being read (None between connections)."""
        return self._response

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Result:
        while not self._closed.is_set():
            if self._events is None:
                self._reconnect()
                continue
            try:
                event = next(self._events)
            except StopIteration:  # the gateway ended the response (it stopped)
                self._drop("the gateway closed the stream")
                continue
            except (httpx2.TransportError, httpx2.StreamError) as exc:
                if self._closed.is_set():
                    break
                self._drop(f"the connection broke: {type(exc).__name__}: {exc}")
                continue
            if event.retry is not None:
                self._retry_s = event.retry / 1000
            if event.event != "result" or not event.data:
                continue
            result = Result.from_json(json.loads(event.data))
            if event.id:
                self.last_event_id = event.id
            return result
        raise StopIteration

    def close(self) -> None:
        """End the stream; safe from another thread (a waiting ``next()`` then stops)."""
        self._closed.set()
        self._close_response()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _connect(self) -> None:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        request = self._http.build_request(
            "GET", STREAM_PATH, params={"camera": self.camera} if self.camera else None,
            headers=headers, timeout=self._timeout)
        try:
            response = self._http.send(request, stream=True)
        except httpx2.TransportError as exc:
            raise Unreachable(None, f"no answer from {self._http.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise self._refusal(response)
        if self._closed.is_set():  # closed from another thread while connecting
            response.close()
            return
        self._response = response
        self._events = iter(httpx2.EventSource(response))

    @staticmethod
    def _refusal(response: httpx2.Response) -> FramewireAPIError:
        body: Any = {}
        try:
            response.read()
            body = response.json()
        except (ValueError, httpx2.HTTPError):  # no JSON reason: the status says enough
            pass
        finally:
            response.close()
        return api_error(response.status_code, body, response.headers.get("retry-after"))

    def _drop(self, why: str) -> None:
        log.info("result stream dropped; reconnecting", extra={
            "why": why, "last_event_id": self.last_event_id})
        self._close_response()

    def _close_response(self) -> None:
        response, self._response, self._events = self._response, None, None
        if response is not None:
            response.close()

    def _reconnect(self) -> None:
        """Connect again after the retry delay, doubling it while the gateway does not
        answer or answers 5xx; a 4xx answer raises."""
        delay = self._reconnect_delay if self._reconnect_delay is not None else self._retry_s
        while not self._closed.wait(delay):
            try:
                self._connect()
            except Unavailable as exc:
                if exc.retry_after:  # the gateway says when
                    delay = exc.retry_after
                    continue
            except FramewireAPIError as exc:
                if exc.status is not None and exc.status < 500:
                    raise
            else:
                self.reconnects += 1
                return
            delay = min(max(delay * 2, 0.1), MAX_DELAY_S)
