"""The errors the client raises: one per answer a program handles differently."""

from __future__ import annotations

from typing import Any

from framewire.errors import FramewireError


class FramewireAPIError(FramewireError):
    """The gateway refused a request, or did not answer.

    ``status`` is the HTTP status (None when no answer came), ``detail`` the gateway's
    reason (what happened and what to do), ``code`` its short stable code where it gives one
    (a refused frame: ``too_large``, ``unsupported_type``...).
    """

    def __init__(self, status: int | None, detail: str, code: str | None = None) -> None:
        super().__init__(f"{status}: {detail}" if status is not None else detail)
        self.status = status
        self.detail = detail
        self.code = code


class Unauthorized(FramewireAPIError):
    """401: no token, or one the site does not know (revoked, or of another site)."""


class Forbidden(FramewireAPIError):
    """403: the token's role is too low for the route (the detail names the role needed)."""


class NotFound(FramewireAPIError):
    """404: no such result, image, trace, camera or token."""


class Unavailable(FramewireAPIError):
    """503: the database, the broker or the pipeline cannot take the request now; try again
    after ``retry_after`` seconds (the gateway's ``Retry-After``, None when it gave none)."""

    def __init__(self, status: int | None, detail: str, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(status, detail, code)
        self.retry_after = retry_after


class Unreachable(FramewireAPIError):
    """No answer: the gateway is not running at that URL, or the connection broke."""


_BY_STATUS: dict[int, type[FramewireAPIError]] = {401: Unauthorized, 403: Forbidden,
                                                  404: NotFound}


def api_error(status: int, body: Any, retry_after: str | None = None) -> FramewireAPIError:
    """The exception for an answer of ``status`` with the JSON ``body`` the gateway sent."""
    detail: Any = body.get("detail") if isinstance(body, dict) else body
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(detail, list):  # a request FastAPI found invalid: one entry per field
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg')}"
                           if isinstance(d, dict) else str(d) for d in detail)
    detail = str(detail) if detail else f"HTTP {status} without a reason"
    if status == 503:
        return Unavailable(status, detail, code, _seconds(retry_after))
    return _BY_STATUS.get(status, FramewireAPIError)(status, detail, code)


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:  # an HTTP date: not what the gateway sends
        return None
