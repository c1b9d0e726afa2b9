"""``framewire licenses``: every installed distribution, model file and broker binary, with
its licence and SHA-256."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from framewire.cli import app, settings_for
from framewire.ops.licenses import Artifact, licence_report


@app.command("licenses")
def licenses_command(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (docs/operations.md, "
                                          "\"Supply chain\").")] = False,
) -> None:
    """List what this installation runs: Python distributions, model files and broker
    binaries, each with its licence and SHA-256 (of a distribution: its METADATA file).

    Example: framewire licenses --json > licenses.json
    """
    report = licence_report(settings_for())
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
        return
    print(f"distributions ({len(report.distributions)}), SHA-256 of each dist-info METADATA:")
    for d in report.distributions:
        print(f"  {d.name:<40} {d.version:<16} {d.license or '(not declared)':<28} {d.sha256}")
    for title, parts in (("models", report.models), ("brokers", report.brokers)):
        print(f"{title} ({len(parts)}), SHA-256 of each file:")
        for part in parts:
            print(_artifact_line(part))


def _artifact_line(part: Artifact) -> str:
    name = f"{part.name} {part.version or ''}".strip()
    return (f"  {name:<40} {part.license or '(unknown)':<28} {part.sha256 or '(no file)'}"
            f"  {part.path or ''}").rstrip()
