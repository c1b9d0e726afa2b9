"""Tokens on every API request: no or unknown token → 401, a role too low → 403.

A token comes as ``Authorization: Bearer TOKEN`` or, from the dashboard's pages, in the
``framewire_token`` cookie (HttpOnly, SameSite=Strict). SameSite is per site, not per origin
(another port of the same host is the same site), so a request that changes something and
is authorised by the cookie must also come from the gateway's own origin (its ``Origin``
header): no other page can use a signed-in browser to change anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from framewire.gateway.tokens import Role, TokenInfo, TokenStore

_bearer = HTTPBearer(auto_error=False, description="a token from `framewire token create`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# the dashboard keeps the token it signed in with here
COOKIE = "framewire_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def who(info: TokenInfo) -> str:
    """How the audit log names the holder of a token."""
    return f"token:{info.token_id}" + (f" ({info.name})" if info.name else "")


def require(role: Role) -> Callable[..., TokenInfo]:
    """A FastAPI dependency: the caller's token, when it has at least ``role``."""

    def check(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> TokenInfo:
        token = credentials.credentials if credentials else request.cookies.get(COOKIE)
        if not token:
            raise HTTPException(401, "no token: send `Authorization: Bearer TOKEN` with a "
                                "token from `framewire token create --role ROLE`",
                                headers=_CHALLENGE)
        if credentials is None and not same_origin(request):
            raise HTTPException(403, "the dashboard's cookie counts for a change only from the "
                                "dashboard's own pages (Origin header); send `Authorization: "
                                "Bearer TOKEN` instead")
        store: TokenStore = request.app.state.gateway.tokens
        info = store.verify(token)
        if info is None:
            raise HTTPException(401, "unknown or revoked token: create one with `framewire "
                                "token create --role ROLE`", headers=_CHALLENGE)
        if Role[info.role] < role:
            raise HTTPException(403, f"this needs the {role.name} role; token "
                                f"{info.token_id} is {info.role}")
        return info

    return check


def same_origin(request: Request) -> bool:
    """Whether a request that changes something comes from the gateway's own pages: its
    ``Origin`` (browsers send it with every POST, PUT, PATCH and DELETE) names the host it
    was sent to. Reads (GET, HEAD, OPTIONS) always pass."""
    if request.method in SAFE_METHODS:
        return True
    origin = request.headers.get("origin")
    return bool(origin) and urlsplit(origin).netloc == request.headers.get("host")


Viewer = Annotated[TokenInfo, Depends(require(Role.viewer))]
Operator = Annotated[TokenInfo, Depends(require(Role.operator))]
Admin = Annotated[TokenInfo, Depends(require(Role.admin))]
