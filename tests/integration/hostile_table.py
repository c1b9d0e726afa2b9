"""The hostile-records suite's table: rows gathered by the test, printed at the end of the run
(tests/integration/conftest.py) for the closing note."""

from __future__ import annotations

HOSTILE_ROWS: list[list[str]] = []
HEAD = ["broker", "case", "topic", "outcome", "dead-letter code", "stored", "neighbour stored",
        "services alive"]


def hostile_table(rows: list[list[str]]) -> str:
    """One line per case and broker, columns aligned."""
    widths = [max(len(str(r[i])) for r in [HEAD, *rows]) for i in range(len(HEAD))]
    return "\n".join(" | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in [HEAD, *rows])
