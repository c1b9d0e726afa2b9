"""Bearer tokens on every API request: no or unknown token → 401, a role too low → 403."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from framewire.gateway.tokens import Role, TokenInfo, TokenStore

_bearer = HTTPBearer(auto_error=False, description="a token from `framewire token create`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def who(info: TokenInfo) -> str:
    """How the audit log names the holder of a token."""
    return f"token:{info.token_id}" + (f" ({info.name})" if info.name else "")


def require(role: Role) -> Callable[..., TokenInfo]:
    """A FastAPI dependency: the caller's token, when it has at least ``role``."""

    def check(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> TokenInfo:
        if credentials is None:
            raise HTTPException(401, "no token: send `Authorization: Bearer TOKEN` with a "
                                "token from `framewire token create --role ROLE`",
                                headers=_CHALLENGE)
        store: TokenStore = request.app.state.gateway.tokens
        info = store.verify(credentials.credentials)
        if info is None:
            raise HTTPException(401, "unknown or revoked token: create one with `framewire "
                                "token create --role ROLE`", headers=_CHALLENGE)
        if Role[info.role] < role:
            raise HTTPException(403, f"this needs the {role.name} role; token "
                                f"{info.token_id} is {info.role}")
        return info

    return check


Viewer = Annotated[TokenInfo, Depends(require(Role.viewer))]
Operator = Annotated[TokenInfo, Depends(require(Role.operator))]
Admin = Annotated[TokenInfo, Depends(require(Role.admin))]
