"""The registry: every stage's declaration, gathered, checked and put in pipeline order.

Stages come from the ``framewire.stages`` entry-point group (Framewire's own four, and any
installed plug-in package) and from the ``stages`` setting (``module:attribute`` of a
``StageSpec``, for code that is importable but not installed as a package). The topology
they make (topics, consumer groups, lag probes, the service list of ``framewire run``,
``framewire status`` and ``framewire topology``) is derived from here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache, cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from framewire.contracts import Contract, DeadLetter, ServiceHeartbeat
from framewire.contracts.records import FrameRecord
from framewire.errors import ConfigError
from framewire.topology.spec import StageSpec, load_object

if TYPE_CHECKING:
    from framewire.config import Settings

ENTRY_POINT_GROUP = "framewire.stages"


@dataclass(frozen=True)
class TopicInfo:
    """One logical topic: its contract, default retention, who writes and who reads it.

    A settings topic (``compacted``) has no Avro contract (``contract`` is None): its key
    names a thing (a camera), its value is that thing's settings as JSON (``value_model``),
    a tombstone removes it; it keeps the latest record per key instead of deleting by age.
    """

    name: str
    contract: type[Contract] | None
    retention: str
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    system: bool = False  # dead letters and heartbeats: written by every process
    compacted: bool = False
    value_model: str | None = None  # a settings topic's JSON value: the pydantic model

    @property
    def single_partition(self) -> bool:
        """Heartbeats keep one partition: readers take the newest per process from its end.
        A settings topic too: one order for all its changes, read whole by its followers."""
        return self.name == "status" or self.compacted


# Topics every process writes, whatever the stages: dead letters and heartbeats.
SYSTEM_TOPICS = (
    TopicInfo("deadletter", DeadLetter, "7d", (), (), system=True),
    TopicInfo("status", ServiceHeartbeat, "1h", (), (), system=True),
)
# Settings the site keeps in Kafka, changed at run time (``framewire cameras``, the gateway)
# and followed by the stages that name them in ``follows``. Kept forever: compaction keeps
# the latest record per key (and, with delete.retention.ms set to forever, the tombstones).
SETTINGS_TOPICS = (
    TopicInfo("cameras", None, "-1", (), (), compacted=True,
              value_model="framewire.config.CameraSettings"),
    # keyed by setting: inference.model, the model inference runs (framewire model switch)
    TopicInfo("control", None, "-1", (), (), compacted=True,
              value_model="framewire.models.control.ModelRequest"),
)


@dataclass(frozen=True)
class Topology:
    """The stages in pipeline order (each after the stages whose output it reads)."""

    stages: tuple[StageSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(self.names)}")

    @property
    def consumers(self) -> tuple[StageSpec, ...]:
        """Stages that read a topic (each one a consumer group with a lag)."""
        return tuple(s for s in self.stages if not s.is_source)

    @property
    def sources(self) -> tuple[StageSpec, ...]:
        return tuple(s for s in self.stages if s.is_source)

    @property
    def frame_path(self) -> tuple[StageSpec, ...]:
        """The consumers on the frames' own path: those that read a frame's record and either
        write frame records on or store them (preprocess, inference, storage). A branch that
        turns frames into something else (analytics: events and alerts) and the stages after
        it are not on it: their lag is not frames waiting, and it never holds capture back."""
        return tuple(s for s in self.consumers if s.input_contract is not None
                     and issubclass(s.input_contract, FrameRecord)
                     and (not s.outputs or any(issubclass(o.contract, FrameRecord)
                                               for o in s.outputs)))

    @cached_property
    def topics(self) -> dict[str, TopicInfo]:
        """Every logical topic: the stages' outputs in pipeline order, then the system topics."""
        found: dict[str, TopicInfo] = {}
        for spec in self.stages:
            for out in spec.outputs:
                readers = tuple(s.name for s in self.stages if s.input == out.topic)
                found[out.topic] = TopicInfo(out.topic, out.contract, out.retention,
                                             (spec.name,), readers)
        for info in SYSTEM_TOPICS:
            found[info.name] = info
        for info in SETTINGS_TOPICS:
            found[info.name] = replace(
                info, writers=tuple(s.name for s in self.stages if info.name in s.manages),
                readers=tuple(s.name for s in self.stages if info.name in s.follows))
        return found

    def topic(self, name: str) -> TopicInfo:
        try:
            return self.topics[name]
        except KeyError:
            raise KeyError(f"unknown topic {name!r}; known: {', '.join(self.topics)}") from None

    def writer(self, topic: str) -> StageSpec | None:
        """The stage that writes a data topic (None for a system topic)."""
        writers = self.topic(topic).writers
        return self.stage(writers[0]) if writers else None

    def transactional_input(self, spec: StageSpec, exactly_once: bool) -> bool:
        """Whether ``spec``'s input is written in Kafka transactions (exactly_once, by a stage
        the runtime's loop runs; a source writes outside transactions)."""
        writer = self.writer(spec.input) if spec.input else None
        return exactly_once and writer is not None and not writer.is_source


def _ordered(specs: list[StageSpec]) -> tuple[StageSpec, ...]:
    """Pipeline order: sources first, then each stage after the writer of its input."""
    written = {o.topic: s for s in specs for o in s.outputs}
    placed: list[StageSpec] = []
    remaining = list(specs)
    while remaining:
        ready = [s for s in remaining if s.input is None or written[s.input] in placed]
        if not ready:
            loop = ", ".join(f"{s.name} ({s.input})" for s in remaining)
            raise ConfigError(f"stages read each other's output in a cycle: {loop}")
        placed.append(ready[0])
        remaining.remove(ready[0])
    return tuple(placed)


def check(specs: Sequence[StageSpec]) -> Topology:
    """The topology of ``specs``, or ConfigError naming what does not fit together."""
    seen: dict[str, StageSpec] = {}
    written: dict[str, tuple[StageSpec, type[Contract]]] = {}
    system = {t.name for t in (*SYSTEM_TOPICS, *SETTINGS_TOPICS)}
    settings_topics = {t.name for t in SETTINGS_TOPICS}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"two stages are named {spec.name!r} ({seen[spec.name].entry} and "
                              f"{spec.entry}); rename one, or register it once")
        seen[spec.name] = spec
        for out in spec.outputs:
            if out.topic in system:
                raise ConfigError(f"stage {spec.name} writes {out.topic!r}, a topic Framewire "
                                  "keeps for itself; choose another name")
            if out.topic in written:
                raise ConfigError(f"stages {written[out.topic][0].name} and {spec.name} both "
                                  f"write {out.topic!r}; each topic has one writing stage")
            written[out.topic] = (spec, out.contract)
    for spec in specs:
        for verb, names in (("follows", spec.follows), ("manages", spec.manages)):
            for name in names:
                if name not in settings_topics:
                    raise ConfigError(f"stage {spec.name} {verb} {name!r}, which is not a "
                                      "settings topic; settings topics: "
                                      f"{', '.join(sorted(settings_topics))}")
        for verb, names in (("reads", spec.reads), ("writes", spec.writes)):
            for name in names:
                if name not in written and name not in system - settings_topics:
                    raise ConfigError(f"stage {spec.name} {verb} {name!r}, which no stage "
                                      "writes and Framewire does not keep (a settings topic "
                                      "goes in follows or manages); topics: "
                                      f"{', '.join(sorted({*written, *system}))}")
        if spec.input is None:
            continue
        if spec.input not in written:
            raise ConfigError(f"stage {spec.name} reads {spec.input!r}, which no stage writes; "
                              f"topics written: {', '.join(sorted(written)) or 'none'}")
        writer, contract = written[spec.input]
        if spec.input_contract is not contract:
            raise ConfigError(
                f"stage {spec.name} reads {spec.input!r} as {_schema(spec.input_contract)} but "
                f"{writer.name} writes {_schema(contract)} there; make the contracts agree")
    return Topology(_ordered(list(specs)))


def _schema(contract: type[Contract] | None) -> str:
    return contract.SCHEMA if contract is not None else "nothing"


def _declared(obj: Any, where: str) -> StageSpec:
    if not isinstance(obj, StageSpec):
        raise ConfigError(f"{where} is a {type(obj).__name__}, not a "
                          "framewire.topology.StageSpec")
    return obj


def discover(extra: Iterable[str] = ()) -> list[StageSpec]:
    """Declarations from the entry-point group (Framewire's own first), then ``extra``."""
    found = sorted(entry_points(group=ENTRY_POINT_GROUP),
                   key=lambda ep: (ep.dist is None or ep.dist.name != "framewire",
                                   ep.dist.name if ep.dist else "", ep.name))
    specs = []
    for ep in found:
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in names itself
            raise ConfigError(f"stage plug-in {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
        specs.append(_declared(obj, f"entry point {ep.name} ({ep.value})"))
    for path in extra:
        specs.append(_declared(load_object(path, f"stages setting {path!r}"),
                               f"stages setting {path!r}"))
    if not specs:
        raise ConfigError(f"no stages registered in the {ENTRY_POINT_GROUP!r} entry-point group: "
                          "install Framewire as a package (`make install`) so its entry points "
                          "exist")
    return specs


@cache
def _topology(extra: tuple[str, ...]) -> Topology:
    return check(discover(extra))


def topology(settings: Settings | None = None) -> Topology:
    """The site's topology: every registered stage, plus those named by ``settings.stages``."""
    return _topology(tuple(settings.stages) if settings is not None else ())


def stage_settings(settings: Settings, spec: StageSpec) -> BaseModel:
    """A stage's settings: Framewire's own stages have a field of their name in ``Settings``;
    a plug-in's come from ``stage_options.<name>``, checked against its model."""
    own = getattr(settings, spec.name, None)
    if isinstance(own, spec.settings):
        return own
    raw = settings.stage_options.get(spec.name, {})
    try:
        return spec.settings.model_validate(raw)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                        for e in exc.errors())
        raise ConfigError(f"stage_options.{spec.name}: {bad} (set "
                          f"FRAMEWIRE_STAGE_OPTIONS__{spec.name.upper()}__<FIELD> or "
                          f"'stage_options' in the FRAMEWIRE_CONFIG file)") from None
