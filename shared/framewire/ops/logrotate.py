"""Log rotation for ``framewire run``: each process appends JSON lines to ``logs/NAME.log``;
past ``log_max_mb`` a log is copied to ``NAME.log.1`` (older copies shift up to
``log_backups``, the oldest is deleted) and emptied in place. The writer keeps its file open in
append mode, so it goes on writing at the new end: no process is signalled or restarted."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def rotate_logs(folder: Path, max_bytes: int, backups: int) -> list[str]:
    """Rotate every ``*.log`` in ``folder`` over ``max_bytes``; the names rotated."""
    rotated = []
    for path in sorted(folder.glob("*.log")):
        try:
            if path.stat().st_size <= max_bytes:
                continue
            for n in range(backups, 0, -1):
                older = path.with_name(f"{path.name}.{n}")
                if n == backups:
                    older.unlink(missing_ok=True)
                elif older.exists():
                    older.rename(path.with_name(f"{path.name}.{n + 1}"))
            if backups:
                shutil.copyfile(path, path.with_name(f"{path.name}.1"))
            with path.open("r+b") as log_file:
                log_file.truncate(0)
        except OSError as exc:
            log.warning("could not rotate a log", extra={"log": str(path), "error": str(exc)})
            continue
        rotated.append(path.name)
    return rotated
