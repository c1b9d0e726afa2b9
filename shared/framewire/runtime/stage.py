"""A stage's pure logic (``Stage``); ``faults.py`` runs it so that a bad record is rejected alone
rather than failing its batch."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar

from framewire.config import Settings, StageSettings
from framewire.contracts import Contract
from framewire.errors import DataError
from framewire.runtime.heartbeat import Counters
from framewire.topology import StageSpec, stage_settings

log = logging.getLogger(__name__)
Outcome = Contract | DataError | None


class Stage(ABC):
    """A stage's pure logic; the runtime owns all Kafka work.

    ``spec`` is the stage's declaration (``framewire.topology.StageSpec``): name, topics,
    contracts and settings model come from it.
    """

    spec: ClassVar[StageSpec | None] = None
    name: ClassVar[str]
    input_topic: ClassVar[str]
    input_type: ClassVar[type[Contract]]
    output_topic: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            if spec.input is None or spec.input_contract is None:
                raise TypeError(f"{cls.__name__}: stage {spec.name} is declared as a source; "
                                "the loop runs stages that consume a topic")
            cls.name, cls.input_topic = spec.name, spec.input
            cls.input_type, cls.output_topic = spec.input_contract, spec.output_topic

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def batching(self) -> StageSettings:
        """This stage's settings (batch size, linger, fetch wait... and its own knobs), checked
        once: a plug-in's come from ``stage_options`` and would be validated at every read."""
        if self.spec is None:  # a stage made in code, without a declaration
            own = getattr(self.settings, self.name, None)
            return own if isinstance(own, StageSettings) else StageSettings()
        found = stage_settings(self.settings, self.spec)
        if not isinstance(found, StageSettings):
            raise TypeError(f"stage {self.name}: its settings model must extend StageSettings")
        return found

    @property
    def output_compression(self) -> str:
        """The producer's compression under ``compression=auto``: none, since most payloads
        (JPEG) do not compress; a stage whose output does compress says so."""
        return "none"

    @abstractmethod
    def process(self, records: list[Any]) -> list[Outcome]:
        """One outcome per input record, in order: an output record, a DataError, or None."""

    def attach(self, counters: Counters) -> None:  # noqa: B027 (optional hook)
        """Called by the runner before the first batch with the process's counters (what its
        heartbeats report): a stage that reports faults or the model it runs keeps them, and
        may start following a settings topic here (a broker is there from now on)."""

    def close(self) -> None:  # noqa: B027 (optional hook: only stages that hold things override)
        """Release what the stage holds (sessions, connections)."""

    @property
    def uses_gpu(self) -> bool:
        """Whether the stage runs on a GPU (its heartbeats then report the GPU's power)."""
        return False


def map_records(fn: Callable[[Any], Outcome], records: list[Any]) -> list[Outcome]:
    """Apply a per-record function, turning a DataError into that record's outcome."""
    outcomes: list[Outcome] = []
    for record in records:
        try:
            outcomes.append(fn(record))
        except DataError as exc:
            outcomes.append(exc)
    return outcomes
