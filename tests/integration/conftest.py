"""The hostile-records table, printed at the end of the run (for the closing note); the
session's shared gateway site (tests/fixtures/gateway.py), for the gateway test modules."""

from __future__ import annotations

import pytest

from tests.fixtures.gateway import shared_gateway as shared_gateway


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.integration.hostile_table import HOSTILE_ROWS, hostile_table

    if HOSTILE_ROWS:
        terminalreporter.section("hostile records")
        for line in hostile_table(HOSTILE_ROWS).splitlines():
            terminalreporter.write_line(line)
