"""``framewire cameras add|rm|ls``: the site's cameras, changed while it runs."""

from __future__ import annotations

from typing import Annotated

import typer

from framewire.cli import app, console, print_json, settings_for

cameras_app = typer.Typer(
    help="Cameras ingest reads, changed at run time without a restart (the compacted "
    "`cameras` topic that ingest follows). Example: framewire cameras ls --json",
    no_args_is_help=True)
app.add_typer(cameras_app, name="cameras")

JSON_HELP = "JSON output (docs/operations.md, \"Cameras at run time\")."


@cameras_app.command("add")
def add(
    camera_id: Annotated[str, typer.Argument(help="The camera id (letters, digits, . _ -).",
                                             show_default=False)],
    url: Annotated[str, typer.Option(help="File, folder or camera URL (rtsp://, http://); "
                                     "a path is opened by the ingest process, on its host.",
                                     show_default=False)],
    fps: Annotated[float | None, typer.Option(help="Frames per second to read (default: "
                                              "as the source delivers).")] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Start a file or folder again at "
                                       "its end.")] = False,
    retention: Annotated[str | None, typer.Option(
        help="How long its results, detections, spans and stored frames are kept (7d, 12h; "
        "default: data_retention).")] = None,
    privacy_mode: Annotated[bool | None, typer.Option(
        "--privacy-mode/--no-privacy-mode", help="Its privacy mode (default: the site's "
        "privacy_mode): raw frames off the blob store, faces blurred before storing.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Add a camera, or change the one of that id; ingest starts (or restarts) it at once.

    Example: framewire cameras add gate-2 --url rtsp://user:pw@10.1.2.4:554/stream1 --fps 10
    """
    from framewire.ops.cameras import add_camera

    settings = settings_for()
    written = add_camera(settings, {"camera_id": camera_id, "url": url, "fps": fps,
                                    "loop": loop, "retention": retention,
                                    "privacy_mode": privacy_mode})
    shown = written.camera.as_json()
    if as_json:
        print_json({"camera": shown, "created": written.created})
        return
    console.print(f"{'added' if written.created else 'changed'} camera {camera_id}: "
                  f"{shown['url']}; ingest {'starts' if written.created else 'restarts'} it "
                  "within seconds")


@cameras_app.command("rm")
def remove(
    camera_id: Annotated[str, typer.Argument(help="The camera id.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Remove a camera; ingest stops it at once.

    A camera of the `cameras` setting stays removed until added again.

    Example: framewire cameras rm gate-2
    """
    from framewire.ops.cameras import remove_camera

    settings = settings_for()
    removed = remove_camera(settings, camera_id)
    if as_json:
        print_json({"removed": removed.as_json()})
        return
    console.print(f"removed camera {camera_id}; ingest stops it within seconds")


@cameras_app.command("ls")
def ls(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List the cameras the site runs, URLs masked.

    The `cameras` setting, with the changes made at run time over it (origin: config or
    topic).

    Example: framewire cameras ls --json
    """
    from framewire.ops.cameras import list_cameras

    settings = settings_for()
    cameras = [c.as_json() for c in list_cameras(settings)]
    if as_json:
        print_json(cameras)
        return
    if not cameras:
        console.print("no cameras: add one with `framewire cameras add CAMERA_ID --url URL`")
        return
    for cam in cameras:
        fps = f"{cam['fps']:g} fps" if cam["fps"] else "source fps"
        extra = " loop" if cam["loop"] else ""
        typer.echo(f"{cam['camera_id']:<20} {fps:<12} {cam['origin']:<7} {cam['url']}{extra}")
