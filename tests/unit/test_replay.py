"""Choosing dead letters to replay: reason and time filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from framewire.contracts import DeadLetter
from framewire.errors import ConfigError
from framewire.ops.replay import parse_since, select

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def letter(code: str, minutes_ago: float, reason: str = "why") -> tuple[None, DeadLetter]:
    return None, DeadLetter(service="preprocess", code=code, reason=reason,
                            failed_at=NOW - timedelta(minutes=minutes_ago))


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", NOW - timedelta(minutes=10)),
    ("2h", NOW - timedelta(hours=2)),
    ("1d", NOW - timedelta(days=1)),
    ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
])
def test_since_accepts_durations_and_iso_times(text, expected):
    assert parse_since(text, NOW) == expected


def test_since_rejects_gibberish_with_examples():
    with pytest.raises(ConfigError, match="10m"):
        parse_since("yesterday-ish", NOW)


def test_select_filters_by_code_or_reason_word_and_time():
    letters = [letter("too_many_pixels", 5), letter("corrupt_image", 5),
               letter("too_many_pixels", 120), letter("stage_error", 1, "model crashed")]
    assert len(select(letters, "too_many_pixels", None)) == 2
    assert len(select(letters, "too_many_pixels", NOW - timedelta(hours=1))) == 1
    assert [d.code for _, d in select(letters, "crashed", None)] == ["stage_error"]
    assert len(select(letters, None, None)) == 4
