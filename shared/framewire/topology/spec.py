"""What a stage declares about itself: the one place its part of the topology is written.

A declaration is data, cheap to import: the stage's code (a model, a database driver) loads
only in the process that runs it, through ``entry``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from pydantic import BaseModel

from framewire.config import StageSettings
from framewire.contracts import Contract
from framewire.errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TOPIC_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Output:
    """A topic a stage writes: its records' contract and how long the topic keeps them."""

    topic: str
    contract: type[Contract]
    retention: str = "7d"


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, what it reads and writes, its settings model, and its code.

    ``input`` is the logical topic it consumes (None for a source, such as ingest, which reads
    cameras); ``entry`` names its code as ``module:attribute``: a ``framewire.runtime.Stage``
    subclass the runtime's loop runs, or, for a source, a function
    ``main(settings, stop, demo)``. ``settings`` is the model of its knobs (batch size,
    linger, fetch wait...) with their defaults: ``StageSettings`` unless given. ``follows``
    names the settings topics (compacted, JSON: ``cameras``) the stage reads whole and keeps
    following beside its input; ``manages`` those it changes (an HTTP API adding cameras).
    ``reads`` names topics it reads whole without a group, beside its input (the gateway's
    dead letters and heartbeats); ``writes`` topics it also writes without being their
    declared writer (the gateway pushes frames to ``frames.raw`` through ingest's code);
    ``replays``: it re-publishes dead letters, so it writes every stage's input topic.
    These three only widen the stage's access (its ACLs); the topology's arrows stay as the
    outputs and inputs draw them. A stage that runs its own consume loop (analytics, on
    faust-streaming) gives a ``main(settings, stop, demo)`` as its entry, like a source;
    ``internal_topics``: that loop keeps topics of its own (a state table's changelog), each
    named ``<group>-<suffix>`` after the stage's group, one per suffix given here, which it
    creates, reads and writes.
    """

    name: str
    summary: str
    entry: str
    input: str | None = None
    input_contract: type[Contract] | None = None
    outputs: tuple[Output, ...] = ()
    # the runtime's knobs by default, so a stage without knobs of its own needs no model
    settings: type[BaseModel] = field(default=StageSettings)
    follows: tuple[str, ...] = ()
    manages: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    replays: bool = False
    internal_topics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"stage name {self.name!r}: use lower-case letters, digits and _ "
                              "(at most 40, starting with a letter)")
        if (self.input is None) != (self.input_contract is None):
            raise ConfigError(f"stage {self.name}: give both input and input_contract, or "
                              "neither (a source)")
        for topic in [self.input, *(o.topic for o in self.outputs)]:
            if topic is not None and not TOPIC_PATTERN.match(topic):
                raise ConfigError(f"stage {self.name}: topic name {topic!r}: use lower-case "
                                  "letters, digits and ._- (at most 100)")
        if ":" not in self.entry:
            raise ConfigError(f"stage {self.name}: entry {self.entry!r} must be "
                              "'module:attribute'")

    @property
    def is_source(self) -> bool:
        """A source produces from outside Kafka (cameras) and consumes no topic."""
        return self.input is None

    @property
    def output_topic(self) -> str | None:
        """The first output topic (where the runtime's loop sends the stage's results)."""
        return self.outputs[0].topic if self.outputs else None

    def load(self) -> Any:
        """The stage's code (``entry``), imported now."""
        return load_object(self.entry, f"stage {self.name}")


def load_object(path: str, what: str) -> Any:
    """``module:attribute`` imported; ConfigError saying what to fix when it is not there."""
    module_name, _, attribute = path.partition(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import {module_name!r} ({exc}); is its package "
                          "installed in this environment?") from exc
    try:
        obj = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{what}: {module_name!r} has no {attribute!r}") from None
    return obj
