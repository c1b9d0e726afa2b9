"""The blob store reads only its own blobs: a reference from a record is checked before any
path is opened."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from framewire.errors import DataError
from framewire.store.blobs import BlobStore, resolve_payload


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", max_bytes=1024)


def blob_path(store: BlobStore, digest: str) -> Path:
    return store.root / digest[:2] / digest[2:4] / f"{digest}.bin"


def code_of(store: BlobStore, uri: str, sha256: str | None = None) -> str:
    with pytest.raises(DataError) as caught:
        store.get(uri, sha256)
    return caught.value.code


def test_its_own_blob_comes_back_with_or_without_the_digest(store: BlobStore):
    uri, digest = store.put(b"frame bytes")
    assert store.get(uri, digest) == b"frame bytes"
    assert store.get(uri) == b"frame bytes"
    assert resolve_payload(None, uri, None, store) == b"frame bytes"


@pytest.mark.parametrize("uri", [
    "file:///etc/hostname",
    "file:///dev/zero",
    "http://example.com/blob.bin",
    "file://otherhost/srv/x.bin",
    "/etc/hostname",
    "file:///" + "a" * 64 + ".bin",
])
def test_a_reference_outside_the_store_is_refused(store: BlobStore, uri: str):
    assert code_of(store, uri) == "bad_blob_uri"


def test_dot_dot_and_other_folders_are_refused_even_for_a_real_blob(store: BlobStore,
                                                                    tmp_path: Path):
    uri, digest = store.put(b"x")
    inside = blob_path(store, digest)
    sneaky = f"{store.root.as_uri()}/{digest[:2]}/../{digest[:2]}/{digest[2:4]}/{digest}.bin"
    assert code_of(store, sneaky) == "bad_blob_uri"
    copy = tmp_path / "elsewhere" / digest[:2] / digest[2:4] / inside.name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"x")
    assert code_of(store, copy.as_uri()) == "bad_blob_uri"


def test_a_symlink_in_the_store_pointing_out_is_refused(store: BlobStore, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private")
    digest = hashlib.sha256(b"private").hexdigest()
    link = blob_path(store, digest)
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    assert code_of(store, link.as_uri()) == "bad_blob_uri"


def test_a_fifo_named_like_a_blob_is_refused_without_being_opened(store: BlobStore):
    digest = "ab" * 32
    fifo = blob_path(store, digest)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # opening it would block this test until its timeout
    assert code_of(store, fifo.as_uri()) == "bad_blob_uri"


def test_a_blob_over_the_cap_is_refused(store: BlobStore):
    uri, digest = store.put(b"y" * 2048)
    assert code_of(store, uri, digest) == "bad_blob_uri"


def test_bytes_that_do_not_match_the_name_are_corrupt(store: BlobStore):
    uri, digest = store.put(b"original")
    blob_path(store, digest).write_bytes(b"tampered")
    assert code_of(store, uri) == "blob_corrupt"


def test_a_digest_that_disagrees_with_the_name_is_refused(store: BlobStore):
    uri, _ = store.put(b"z")
    assert code_of(store, uri, "0" * 64) == "bad_blob_uri"


def test_a_missing_blob_of_the_store_says_so(store: BlobStore):
    digest = "cd" * 32
    assert code_of(store, blob_path(store, digest).as_uri()) == "blob_missing"
