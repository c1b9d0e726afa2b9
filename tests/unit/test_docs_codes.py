"""Every dead-letter code the code can produce is in the table of docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# DataError("code", ...) and DataError(\n    "code", ...) across the package and services
RAISED = re.compile(r'DataError\(\s*"([a-z_]+)"')


def test_every_dead_letter_code_is_documented():
    sources = [*(ROOT / "shared" / "framewire").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    codes = {code for path in sources for code in RAISED.findall(path.read_text())}
    assert {"invalid_record", "bad_blob_uri", "crash_loop", "retries_exhausted"} <= codes
    table = (ROOT / "docs" / "operations.md").read_text()
    missing = sorted(code for code in codes if f"`{code}`" not in table)
    assert not missing, f"dead-letter codes missing from docs/operations.md: {missing}"


def test_every_key_of_status_json_is_documented():
    from tests.integration.test_status_and_cli import INSTANCE_KEYS

    page = (ROOT / "docs" / "operations.md").read_text()
    assert not sorted(k for k in INSTANCE_KEYS if f"`{k}`" not in page)
