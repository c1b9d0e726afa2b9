"""API tokens with roles: made by ``framewire token create``, checked by the gateway.

A token is ``fw_<id>_<secret>``: the id names it (in ``framewire token ls``, revocation and
the audit log), the secret proves it. Only the SHA-256 of the whole token is kept, in
``FRAMEWIRE_HOME/tokens.json`` (mode 0600): a token is shown once, when it is made, and
cannot be read back. SHA-256 without a salt is enough here: a token is 256 random bits, not
a password a person chose, so there is nothing to guess from its digest.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

from framewire.errors import ConfigError

TOKEN_PREFIX = "fw_"


class Role(IntEnum):
    """What a token may do; each role may do what the ones below it may."""

    viewer = 1  # read: results, their frames and stream, dead letters, traces, status
    operator = 2  # and push frames, replay dead letters
    admin = 3  # and manage tokens

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().lower()]
        except KeyError:
            raise ConfigError(f"role {name!r}: choose viewer, operator or admin") from None


@dataclass(frozen=True)
class TokenInfo:
    """A token as kept: never the token itself."""

    token_id: str
    role: str
    name: str
    created_at: str
    sha256: str

    def public(self) -> dict[str, str]:
        """What ``framewire token ls`` and ``GET /api/v1/tokens`` show (no digest)."""
        return {"token_id": self.token_id, "role": self.role, "name": self.name,
                "created_at": self.created_at}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The site's tokens, in one JSON file under FRAMEWIRE_HOME; re-read when it changes, so
    a token revoked from the command line stops working in a running gateway at once."""

    def __init__(self, home: Path) -> None:
        self.path = home / "tokens.json"
        self._cache: tuple[tuple[int, int], dict[str, TokenInfo]] | None = None
        self._lock = threading.Lock()

    def _read(self) -> dict[str, TokenInfo]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
            try:
                raw = json.loads(self.path.read_text() or "{}")
                tokens = {t["token_id"]: TokenInfo(**t) for t in raw.get("tokens", [])}
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"{self.path} is not a token file Framewire wrote ({exc}); "
                                  "move it away and create the tokens again") from None
            self._cache = (stamp, tokens)
            return tokens

    @contextmanager
    def _editing(self) -> Iterator[dict[str, TokenInfo]]:
        """The tokens, to change in place; written back atomically (0600) under a lock."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tokens = dict(self._read())
            yield tokens
            tmp = self.path.with_suffix(".tmp")
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(out, "w") as f:
                json.dump({"tokens": [asdict(t) for t in tokens.values()]}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def create(self, role: Role, name: str = "") -> tuple[str, TokenInfo]:
        """A new token of ``role``: the token (shown once) and what is kept of it."""
        token_id = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        info = TokenInfo(token_id, role.name, name,
                         datetime.now(UTC).isoformat(timespec="seconds"), _digest(token))
        with self._editing() as tokens:
            tokens[token_id] = info
        return token, info

    def revoke(self, token_id: str) -> TokenInfo | None:
        """Remove a token; the one removed, or None when no token has that id."""
        with self._editing() as tokens:
            return tokens.pop(token_id, None)

    def list(self) -> list[TokenInfo]:
        return sorted(self._read().values(), key=lambda t: t.created_at)

    def verify(self, token: str) -> TokenInfo | None:
        """The token's record when it is one of the site's, else None."""
        token_id = token.removeprefix(TOKEN_PREFIX).partition("_")[0]
        info = self._read().get(token_id) if token.startswith(TOKEN_PREFIX) else None
        if info is None or not hmac.compare_digest(info.sha256, _digest(token)):
            return None
        return info
