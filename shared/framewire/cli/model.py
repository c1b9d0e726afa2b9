"""``framewire model switch|show``: the model inference runs, switched while the site runs."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from framewire.cli import app, console, print_json, settings_for

model_app = typer.Typer(
    help="The model inference runs, switched at run time without a restart (the compacted "
    "`control` topic that preprocess and inference follow). Example: framewire model show",
    no_args_is_help=True)
app.add_typer(model_app, name="model")

JSON_HELP = "JSON output (docs/operations.md, \"Switching the model\")."


@model_app.command("switch")
def switch(
    model: Annotated[str, typer.Argument(
        help="A built-in model (centerface) or the path of a model manifest (YAML), as "
        "preprocess and inference see it on their hosts.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Run MODEL from now on, without a restart.

    Inference loads it beside the running one and swaps it in between micro-batches;
    preprocess letterboxes for its input size; every result records the model's name and
    version.

    Refused (exit 2, nothing changed) unless the manifest loads here, its model file exists
    and its licence is accepted. A model inference then fails to load keeps the old one
    running, with a model_switch fault in `framewire status` and `framewire model show`.

    Example: framewire model switch /models/yolov8n-faces.yaml
    """
    from framewire.gateway.audit import audit
    from framewire.ops.model import switch_model

    settings = settings_for()
    by = f"cli:{getpass.getuser()}"
    switched = switch_model(settings, model, by)
    audit(settings.home.resolve(), by, "model.switch", model=model,
          model_name=switched.manifest.name, model_version=switched.manifest.version)
    if as_json:
        print_json(switched.as_json())
        return
    m = switched.manifest
    console.print(f"switching to {m.name} {m.version} ({m.input_width}x{m.input_height}); "
                  "`framewire model show` tells when every process runs it")


@model_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show which model the site runs, and which model each process runs.

    The configured model, the latest switch (by whom, when), and each live preprocess and
    inference process with its model and any refused switch.

    Example: framewire model show --json
    """
    from framewire.ops.model import model_state

    state = model_state(settings_for())
    if as_json:
        print_json(state)
        return
    request = state["requested"]
    asked = (f"switched to {request['model']} by {request['by'] or 'unknown'} at "
             f"{request['requested_at']}" if request else "no switch: the configured model")
    typer.echo(f"model      {state['model']} ({state['model_name'] or '?'} "
               f"{state['model_version'] or '?'}); {asked}")
    typer.echo(f"configured {state['configured']}")
    if state["error"]:
        console.print(f"[yellow]! {state['error']}[/]")
    for p in state["processes"]:
        line = f"  {p['service']:<11} {p['instance']:<28} {p['model_name']} {p['model_version']}"
        typer.echo(line + (f"  refused: {p['fault']}" if p["fault"] else ""))
    if not state["processes"]:
        typer.echo("  no preprocess or inference process is running")
    elif not state["settled"]:
        console.print("[yellow]! not every process runs it yet[/]")
