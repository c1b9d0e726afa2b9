"""``framewire topology``: the graph the registered stages make."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from framewire.cli import app, console, settings_for
from framewire.config import Settings
from framewire.contracts import Contract
from framewire.contracts.codec import Codec
from framewire.topology import StageSpec, TopicInfo, Topology, stage_settings, topology


def _contract(codec: Codec, contract: type[Contract]) -> dict[str, Any]:
    return {"contract": contract.SCHEMA, "version": codec.latest(contract.SCHEMA).version}


def _topic_contract(codec: Codec, topic: TopicInfo) -> dict[str, Any]:
    """An Avro topic's contract; a settings topic's JSON model (no schema version)."""
    if topic.contract is None:
        return {"contract": f"json:{topic.value_model}", "version": None}
    return _contract(codec, topic.contract)


def describe(settings: Settings, site: Topology) -> dict[str, Any]:
    """The topology as ``framewire topology --json`` prints it (docs/topology.md)."""
    codec = Codec()

    def stage(spec: StageSpec) -> dict[str, Any]:
        knobs = stage_settings(settings, spec)
        return {
            "name": spec.name, "summary": spec.summary,
            "kind": "source" if spec.is_source else "stage", "entry": spec.entry,
            "group": None if spec.is_source else settings.group(spec.name),
            "input": None if spec.input is None or spec.input_contract is None else {
                "topic": spec.input, "name": settings.topic(spec.input),
                **_contract(codec, spec.input_contract)},
            "outputs": [{"topic": o.topic, "name": settings.topic(o.topic),
                         **_contract(codec, o.contract)} for o in spec.outputs],
            "replicas": 1 if spec.is_source else getattr(knobs, "replicas", 1),
            "settings": {"model": type(knobs).__name__, "values": knobs.model_dump(mode="json")},
        }

    return {
        "stages": [stage(s) for s in site.stages],
        "topics": [{
            "topic": t.name, "name": settings.topic(t.name), **_topic_contract(codec, t),
            "retention": str(settings.topic_retention(t.name)),
            "partitions": 1 if t.single_partition else settings.topic_partitions,
            "writers": list(t.writers) if not t.system else ["*"],
            "readers": list(t.readers), "system": t.system, "compacted": t.compacted,
        } for t in site.topics.values()],
    }


@app.command(name="topology")
def show_topology(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Print the pipeline the registered stages make: stages, topics, groups, contracts.

    Example: framewire topology --json
    """
    settings = settings_for()
    graph = describe(settings, topology(settings))
    if as_json:
        print(json.dumps(graph, indent=2))
        return

    def ref(entry: dict[str, Any]) -> str:
        return f"{entry['topic']} [{entry['contract'].rpartition('.')[2]} v{entry['version']}]"

    print(f"stages ({len(graph['stages'])}), in pipeline order:")
    for s in graph["stages"]:
        reads = ref(s["input"]) if s["input"] else "(source)"
        writes = ", ".join(ref(o) for o in s["outputs"]) or "(sink)"
        group = f"  group {s['group']}" if s["group"] else ""
        print(f"  {s['name']:<12} {reads} -> {writes}{group}  x{s['replicas']}")
    print(f"topics ({len(graph['topics'])}):")
    for t in graph["topics"]:
        command = {"cameras": "framewire cameras", "control": "framewire model"}.get(t["name"])
        writers = ", ".join([command, *t["writers"]] if command else t["writers"])
        flow = ("every process" if t["system"] else writers) + " -> " + (
            ", ".join(t["readers"]) or "(no stage reads it)")
        contract = (f"{t['contract'].rpartition('.')[2]} v{t['version']}" if t["version"]
                    else f"{t['contract'].rpartition('.')[2]} (JSON)")
        print(f"  {t['name']:<20} {contract:<22} partitions {t['partitions']:<3} "
              f"retention {t['retention']:<5} {flow}")
    console.print("details: framewire topology --json")
