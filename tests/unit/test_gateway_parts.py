"""The gateway's parts that need no server: tokens, roles, stream positions, push checks."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

import pytest

from framewire.cli import _gateway_line
from framewire.config import load_settings
from framewire.errors import ConfigError
from framewire.gateway.frames import ends_whole
from framewire.gateway.results import StreamPosition
from framewire.gateway.tokens import Role, TokenStore
from tests.fixtures.images import jpeg, synthetic_frame


def test_a_token_is_kept_only_as_its_digest_in_a_private_file(tmp_path):
    store = TokenStore(tmp_path)
    token, info = store.create(Role.operator, "door")
    assert store.verify(token) == info and info.role == "operator"
    kept = (tmp_path / "tokens.json").read_text()
    assert token not in kept and info.sha256 in kept
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    assert set(json.loads(kept)["tokens"][0]) == {"token_id", "role", "name", "created_at",
                                                  "sha256"}


def test_a_wrong_forged_or_revoked_token_is_not_verified(tmp_path):
    store = TokenStore(tmp_path)
    token, info = store.create(Role.admin)
    other = TokenStore(tmp_path)  # another process: sees the file as it is now
    assert other.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert other.verify(f"fw_{info.token_id}_guess") is None
    assert other.verify("Bearer " + token) is None and other.verify("") is None
    assert store.revoke(info.token_id) == info
    assert other.verify(token) is None and store.revoke(info.token_id) is None


def test_roles_are_ordered_and_an_unknown_role_is_refused_naming_the_choices():
    assert Role.viewer < Role.operator < Role.admin
    assert Role.parse(" Operator ") is Role.operator
    with pytest.raises(ConfigError, match="viewer, operator or admin"):
        Role.parse("root")


def test_a_stream_position_survives_its_event_id_to_the_microsecond():
    at = StreamPosition(datetime(2026, 12, 2, 5, 0, 1, 123456, tzinfo=UTC), "01JF00ABC")
    assert StreamPosition.parse(at.event_id) == at
    later = StreamPosition(at.stored_at, "01JF00ABD")
    assert at < later < StreamPosition(datetime(2026, 12, 2, 5, 0, 2, tzinfo=UTC))
    for bad in ("", "yesterday", "-01JF", "12x-01JF", "9" * 30 + "-01JF"):
        with pytest.raises(ValueError, match="not an event id"):
            StreamPosition.parse(bad)


def test_a_frame_cut_short_is_told_from_a_whole_one_without_decoding():
    whole = jpeg(synthetic_frame(2))
    assert ends_whole(whole, "image/jpeg") and ends_whole(whole + b"\0" * 16, "image/jpeg")
    assert not ends_whole(whole[: len(whole) // 2], "image/jpeg")
    assert not ends_whole(b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png")


def test_run_prints_where_the_gateway_serves(monkeypatch, tmp_path):
    monkeypatch.setenv("FRAMEWIRE_HOME", str(tmp_path))
    monkeypatch.setenv("FRAMEWIRE_GATEWAY__PORT", "8181")
    line = _gateway_line(load_settings())
    assert line.startswith("gateway http://127.0.0.1:8181/api/v1 ")
    assert "framewire token create --role admin" in line
    assert "\ndashboard http://127.0.0.1:8181/ (sign in with a token" in line
    monkeypatch.setenv("FRAMEWIRE_GATEWAY__PORT", "0")
    assert str(tmp_path / "gateway.url") in _gateway_line(load_settings())
