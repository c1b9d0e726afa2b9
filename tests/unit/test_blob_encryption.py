"""Blobs encrypted at rest: AES-GCM with a key from the environment or a 0600 key file, the key
id in each blob so keys rotate; the name stays the SHA-256 of the plaintext."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from framewire.config import load_settings
from framewire.errors import ConfigError, DataError
from framewire.store.blobs import ENCRYPTED_MAGIC, BlobStore

FRAME = b"\xff\xd8 a face in a frame " * 200


def key_line(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def write_keys(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)
    return path


def store_with(tmp_path: Path, keys_file: Path) -> BlobStore:
    return BlobStore.from_settings(load_settings(home=tmp_path, blob_keys_file=keys_file))


def blob_file(store: BlobStore, uri: str) -> Path:
    return store.locate(uri)[0]


def corrupt_reason(store: BlobStore, uri: str) -> str:
    with pytest.raises(DataError) as caught:
        store.get(uri)
    assert caught.value.code == "blob_corrupt"
    return str(caught.value)


@pytest.fixture
def key_a() -> str:
    return key_line("a")


@pytest.fixture
def store(tmp_path: Path, key_a: str) -> BlobStore:
    return store_with(tmp_path, write_keys(tmp_path / "keys", key_a))


def test_an_encrypted_blob_comes_back_as_written_under_its_plaintext_digest(store: BlobStore):
    uri, digest = store.put(FRAME)
    assert digest in uri
    assert store.get(uri, digest) == FRAME
    assert store.put(FRAME) == (uri, digest)


def test_the_file_on_disk_holds_neither_the_plaintext_nor_the_key(store: BlobStore, key_a: str):
    uri, _ = store.put(FRAME)
    stored = blob_file(store, uri).read_bytes()
    assert stored.startswith(ENCRYPTED_MAGIC + b"\x01a")
    assert b"a face in a frame" not in stored
    assert base64.b64decode(key_a.split(":")[1]) not in stored


def test_the_key_from_the_environment_encrypts(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FRAMEWIRE_BLOB_KEY", key_line("env1"))
    store = BlobStore.from_settings(load_settings(home=tmp_path))
    uri, _ = store.put(FRAME)
    assert blob_file(store, uri).read_bytes().startswith(ENCRYPTED_MAGIC + b"\x04env1")
    assert store.get(uri) == FRAME


def test_after_rotation_an_old_key_blob_is_read_and_new_blobs_use_the_new_key(
        tmp_path: Path, key_a: str):
    keys = write_keys(tmp_path / "keys", key_a)
    old_uri, _ = store_with(tmp_path, keys).put(FRAME)

    key_b = key_line("b")
    rotated = store_with(tmp_path, write_keys(keys, key_b, key_a))
    assert rotated.get(old_uri) == FRAME
    new_uri, _ = rotated.put(b"a later frame" * 100)
    assert blob_file(rotated, new_uri).read_bytes().startswith(ENCRYPTED_MAGIC + b"\x01b")
    assert rotated.get(new_uri) == b"a later frame" * 100

    retired = store_with(tmp_path, write_keys(keys, key_b))
    assert retired.get(new_uri) == b"a later frame" * 100
    reason = corrupt_reason(retired, old_uri)
    assert "'a'" in reason and "blob_keys_file" in reason


def test_a_tampered_byte_is_blob_corrupt(store: BlobStore):
    uri, _ = store.put(FRAME)
    path = blob_file(store, uri)
    stored = bytearray(path.read_bytes())
    stored[-20] ^= 0x01
    path.write_bytes(bytes(stored))
    assert "does not decrypt" in corrupt_reason(store, uri)


def test_a_blob_moved_to_another_digest_is_blob_corrupt(store: BlobStore):
    uri, _ = store.put(FRAME)
    other_uri, _ = store.put(b"another frame" * 100)
    blob_file(store, uri).replace(blob_file(store, other_uri))
    corrupt_reason(store, other_uri)


def test_a_plain_blob_is_still_read_once_keys_are_set(tmp_path: Path, store: BlobStore):
    uri, digest = BlobStore(store.root).put(FRAME)
    assert blob_file(store, uri).read_bytes() == FRAME
    assert store.get(uri, digest) == FRAME


def test_a_plain_blob_beginning_with_the_magic_is_still_read(store: BlobStore):
    data = ENCRYPTED_MAGIC + b"\x01a" + b"not encrypted at all" * 10
    uri, digest = BlobStore(store.root).put(data)
    assert store.get(uri, digest) == data


def test_a_key_in_the_config_file_in_clear_is_refused(monkeypatch, tmp_path: Path):
    cfg = tmp_path / "fw.yaml"
    cfg.write_text(f"blob_key: {key_line('k1')}\n")
    monkeypatch.setenv("FRAMEWIRE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="FRAMEWIRE_BLOB_KEY"):
        load_settings(home=tmp_path)


def test_a_key_file_readable_by_others_is_refused_with_chmod(tmp_path: Path):
    keys = write_keys(tmp_path / "keys", key_line("k1"))
    keys.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_settings(home=tmp_path, blob_keys_file=keys)


@pytest.mark.parametrize("line", [
    "no-colon-here",
    "k1:not base64!",
    f"k1:{base64.b64encode(os.urandom(16)).decode()}",
    f"bad id:{base64.b64encode(os.urandom(32)).decode()}",
])
def test_a_malformed_key_is_refused_without_echoing_it(monkeypatch, tmp_path: Path, line: str):
    monkeypatch.setenv("FRAMEWIRE_BLOB_KEY", line)
    with pytest.raises(ConfigError, match="KEYID:BASE64KEY|32") as caught:
        load_settings(home=tmp_path)
    assert (line.partition(":")[2] or line) not in str(caught.value)


def test_one_key_id_with_two_keys_is_refused(tmp_path: Path):
    keys = write_keys(tmp_path / "keys", key_line("k1"), key_line("k1"))
    with pytest.raises(ConfigError, match="new id"):
        load_settings(home=tmp_path, blob_keys_file=keys)
