"""``framewire token``: the gateway's API tokens (create, list, revoke)."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table

from framewire.cli import app, console, settings_for

token_app = typer.Typer(help="API tokens of the gateway: create, list, revoke.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


def _local_user() -> str:
    return f"cli:{getpass.getuser()}"


@token_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="viewer (read), operator (+ push frames, replay "
                                      "dead letters) or admin (+ manage tokens).")],
    name: Annotated[str, typer.Option(help="Who or what holds it, e.g. door-camera.")] = "",
) -> None:
    """Create an API token; it is printed once, alone on the last line, and only its digest kept.

    Example: framewire token create --role operator --name door-camera
    """
    from framewire.gateway.audit import audit
    from framewire.gateway.tokens import Role, TokenStore

    chosen = Role.parse(role)
    settings = settings_for()
    home = settings.home.resolve()
    token, info = TokenStore(home).create(chosen, name)
    audit(home, _local_user(), "token.create", token_id=info.token_id, role=info.role,
          name=info.name)
    console.print(f"token {info.token_id} ({info.role}{', ' + name if name else ''}) created; "
                  "it is shown once, on the next line: keep it secret. Use it as "
                  "`Authorization: Bearer TOKEN`")
    typer.echo(token)


@token_app.command("ls")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the tokens: id, role, name, when made (never the tokens themselves).

    Example: framewire token ls --json
    """
    from framewire.gateway.tokens import TokenStore

    tokens = TokenStore(settings_for().home.resolve()).list()
    if as_json:
        typer.echo(json.dumps([t.public() for t in tokens], indent=2))
        return
    table = Table("token id", "role", "name", "created")
    for t in tokens:
        table.add_row(t.token_id, t.role, t.name or "-", t.created_at)
    console.print(table)
    if not tokens:
        console.print("no tokens: `framewire token create --role admin` makes one")


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (`framewire token ls`).")],
) -> None:
    """Revoke a token: a running gateway refuses it from the next request on.

    Example: framewire token revoke 3f9a1c2e
    """
    from framewire.gateway.audit import audit
    from framewire.gateway.tokens import TokenStore

    home = settings_for().home.resolve()
    gone = TokenStore(home).revoke(token_id)
    if gone is None:
        console.print(f"[red]no token {token_id}[/]: `framewire token ls` lists them")
        raise typer.Exit(1)
    audit(home, _local_user(), "token.revoke", token_id=token_id, role=gone.role,
          name=gone.name)
    console.print(f"token {token_id} ({gone.role}) revoked")
