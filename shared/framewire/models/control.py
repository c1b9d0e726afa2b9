"""The model inference runs, switched at run time through the ``control`` settings topic.

The topic is compacted, like ``cameras``: its key names a setting, its value is JSON. The key
``inference.model`` holds ``{"model": NAME_OR_MANIFEST_PATH, "requested_at": ISO time,
"by": who}`` (``ModelRequest``); a tombstone sends the site back to its configured model
(``inference.model``). Preprocess follows it to letterbox to the model's input size,
inference to load the model; each loads a requested model in a thread of its own and swaps
it in between micro-batches (``ModelWatch``). ``framewire model switch`` and the gateway's
``POST /api/v1/model`` write it (``framewire.ops.model``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from framewire.broker.reading import KeyedValue
from framewire.config import Settings
from framewire.ops.settings_topic import TopicWatch

log = logging.getLogger(__name__)

CONTROL_TOPIC = "control"
MODEL_KEY = "inference.model"


class ModelRequest(BaseModel):
    """The value of the ``inference.model`` record: which model, asked when and by whom."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, max_length=1000,
                       description="a built-in model name (centerface) or a manifest's path")
    requested_at: datetime
    by: str = Field("", max_length=200)


def model_value(request: ModelRequest) -> bytes:
    """A model request's record value: JSON."""
    return request.model_dump_json().encode()


# what the records say about the model: no record yet, back to the configured one, a request
_UNSET = object()


def latest_request(records: Iterable[KeyedValue], current: object = _UNSET) -> object:
    """The latest ``inference.model`` record in ``records`` over ``current``: a ModelRequest,
    None for a tombstone (the configured model), or ``current`` when none came. A record
    that is not a model request is logged and skipped."""
    for key, value in records:
        if key != MODEL_KEY.encode():
            continue
        if value is None:
            current = None
            continue
        try:
            current = ModelRequest.model_validate(json.loads(value))
        except (ValueError, ValidationError) as exc:
            log.error("bad record on the control topic skipped", extra={
                "error": str(exc), "check": "switch models with `framewire model switch`"})
    return current


class ModelWatch:
    """Follows the ``inference.model`` record for a stage (see the module's doc).

    ``start`` reads the topic to its end and returns the model to run now (the request's,
    or the configured one); a thread then calls ``apply(model)`` with each model requested
    after, in order. ``apply`` does the loading (slow: it runs in that thread) and must not
    raise for a bad model: it keeps the old one and reports why.
    """

    def __init__(self, settings: Settings, service: str, apply: Callable[[str], None],
                 start_timeout_s: float = 10.0) -> None:
        self.settings, self.apply = settings, apply
        self.request: object = _UNSET
        self._following = False  # requests read by ``start`` are the model to start with
        self.watch = TopicWatch(settings, CONTROL_TOPIC, service, self._records,
                                start_timeout_s, thread_name="model-watch")

    @property
    def model(self) -> str:
        """The model the records ask for: the latest request's, else the configured one."""
        if isinstance(self.request, ModelRequest):
            return self.request.model
        return self.settings.inference.model

    def start(self) -> str:
        """The model to run now (the topic read to its end; the configured one when it cannot
        be read: a switch applies once it can). Load it, then call ``follow``: a switch that
        comes meanwhile is applied after it, never beside it."""
        self.watch.start()
        return self.model

    def follow(self) -> None:
        """Apply the topic's next requests in a thread of its own until closed."""
        self._following = True
        self.watch.follow()

    def _records(self, records: list[KeyedValue]) -> None:
        found = latest_request(records, self.request)
        if found is not self.request:  # a request came (the same model: loaded again)
            self.request = found
            if self._following:
                try:
                    self.apply(self.model)
                except Exception:  # a failed switch must never end the following
                    log.exception("model switch failed", extra={"model": self.model})

    def close(self) -> None:
        """Stop following (waits for a load in progress)."""
        self.watch.close()
