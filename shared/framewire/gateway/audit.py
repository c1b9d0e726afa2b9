"""The audit log: who changed what on the site, and when, one JSON object per line.

Written to ``FRAMEWIRE_HOME/logs/audit.log`` (0600) by the gateway and by ``framewire token``:
token creation and revocation, dead-letter replays. Pushed frames are not audited (they are
the data, counted in heartbeats and traced).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_lock = threading.Lock()


def audit_path(home: Path) -> Path:
    return home / "logs" / "audit.log"


def audit(home: Path, who: str, action: str, **details: Any) -> None:
    """Append one entry: ``at`` (UTC), ``who`` (a token id and name, or the local user),
    ``action`` and its details."""
    path = audit_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    entry = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "who": who,
             "action": action, **details}
    line = json.dumps(entry, default=str, sort_keys=False) + "\n"
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
