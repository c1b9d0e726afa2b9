"""Structured logging: JSON lines when stderr is not a terminal, readable lines when it is.

Every line has the URLs in it masked (``mask_url``): no password or token reaches a log."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from framewire.secrets import mask_urls_in

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_COLOURS = {"DEBUG": "\033[2m", "WARNING": "\033[33m", "ERROR": "\033[31m",
            "CRITICAL": "\033[1;31m"}
_RESET = "\033[0m"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's ``extra=`` fields at top level."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask_urls_in(json.dumps(entry, default=str))


class ConsoleFormatter(logging.Formatter):
    """``time level service message key=value ...`` for people at a terminal."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items()
                          if k not in _STANDARD and v is not None)
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        colour = _COLOURS.get(record.levelname, "")
        level = f"{colour}{record.levelname:<7}{_RESET if colour else ''}"
        line = f"{ts} {level} {self.service:<10} {record.getMessage()} \033[2m{extras}{_RESET}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return mask_urls_in(line.rstrip())


def setup_logging(service: str, level: str = "INFO", json_lines: bool | None = None) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = not sys.stderr.isatty() if json_lines is None else json_lines
    handler.setFormatter(JsonFormatter(service) if use_json else ConsoleFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
