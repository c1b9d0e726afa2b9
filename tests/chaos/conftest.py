"""The chaos suite's closing note: one count line per scenario, printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.chaos.ledger import Ledger
from tests.fixtures.kafka import Site


@pytest.fixture
def ledger() -> Ledger:
    """Records a scenario's ``Tally``; the lines are repeated in the closing note."""
    return Ledger()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not Ledger.tallies:
        return
    terminalreporter.section("chaos ledger")
    terminalreporter.write_line(
        "scenario | published | stored | dead-lettered | lost | duplicated | notes")
    for tally in Ledger.tallies:
        terminalreporter.write_line(tally.line())


@pytest.fixture(params=["embedded", "kafka"])
def broker_site(request: pytest.FixtureRequest) -> Site:
    """A fresh site on each broker in turn: the embedded one, then the 3-node Apache Kafka."""
    return request.getfixturevalue("site" if request.param == "embedded" else "kafka_site")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On Apache Kafka, make test kills an inference replica (the stage whose repeats show on
    ``detections``); the other replica kills there run with the long versions (-m slow), to
    keep make test within its time budget."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        if callspec.params.get("broker_site") == "kafka" and \
                callspec.params.get("service") != "inference":
            item.add_marker(pytest.mark.slow)
