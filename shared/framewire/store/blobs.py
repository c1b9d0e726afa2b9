"""Where frames too large to ride in a record live (claim check): content-addressed files.

A blob is named by its SHA-256, so writing the same bytes twice stores them once and a reader
can verify what it got. URIs look like ``file:///abs/path/ab/cd/abcd....bin``.

A reference comes from a record, and a record can come from anyone who can write to the
broker: the store reads only its own blobs. A URI that is not this store's
``<root>/aa/bb/<sha256>.bin`` form, resolves outside the root (``..``, a symlink), names
something other than a regular file, or is larger than the cap is refused (``bad_blob_uri``)
without the path being opened; what is read must match the SHA-256 in its name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from framewire.errors import DataError, SystemicError, TransientError

_BLOB_NAME = re.compile(r"^(?P<digest>[0-9a-f]{64})\.bin$")
# the largest blob a reader takes: frames are capped at ingest (max_upload_bytes, 20 MiB by
# default) and raw letterboxed pixels are a few MiB
MAX_BLOB_BYTES = 64 * 1024 * 1024


class BlobStore:
    """Content-addressed blobs on a filesystem folder (shared by all services of a site)."""

    def __init__(self, root: Path, max_bytes: int = MAX_BLOB_BYTES) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes; returns (uri, sha256 hex). Idempotent."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / digest[:2] / digest[2:4] / f"{digest}.bin"
        if not path.exists():
            tmp = None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # write then rename, so a reader never sees a half-written blob
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, path)
            except OSError as exc:
                if tmp is not None:
                    Path(tmp).unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # every blob would fail: pause
                    raise SystemicError(
                        f"the blob store {self.root} is full ({exc.strerror}): paused, nothing "
                        "dead-lettered; free space there (or move FRAMEWIRE_BLOB_DIR) and it "
                        "resumes by itself") from exc
                raise TransientError(f"could not write blob {path}: {exc}") from exc
        return path.as_uri(), digest

    def get(self, uri: str, sha256: str | None = None) -> bytes:
        """Read one of this store's blobs back, verifying its digest (refused: ``bad_blob_uri``
        when the URI is not one of its blobs, ``blob_corrupt`` when the bytes do not match)."""
        path, digest = self.locate(uri)
        if sha256 is not None and sha256 != digest:
            raise DataError("bad_blob_uri", f"blob URI {uri!r} names digest {digest} but the "
                            f"record says {sha256}")
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise DataError("bad_blob_uri", f"blob URI {uri!r} is not a regular file")
            if info.st_size > self.max_bytes:
                raise DataError("bad_blob_uri", f"blob {uri} holds {info.st_size} bytes, more "
                                f"than the {self.max_bytes} a blob may")
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(
                "blob_missing",
                f"blob {uri} is gone (retention or a different FRAMEWIRE_BLOB_DIR on this host?)",
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError("blob_corrupt", f"blob {uri} does not match its SHA-256 {digest}")
        return data

    def locate(self, uri: str) -> tuple[Path, str]:
        """The path and digest of one of this store's blobs; ``bad_blob_uri`` for anything
        else, decided from the URI alone (nothing is opened)."""
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or \
                parsed.query or parsed.fragment:
            raise DataError("bad_blob_uri", f"blob URI {uri[:200]!r} is not a file:// URI of "
                            "this host's blob store")
        path = Path(unquote(parsed.path))
        match = _BLOB_NAME.match(path.name)
        if not match or not path.is_absolute() or ".." in path.parts:
            raise DataError("bad_blob_uri", f"blob URI {uri[:200]!r} is not a blob's name "
                            "(<blob dir>/aa/bb/<sha256>.bin)")
        digest = match["digest"]
        expected = self.root / digest[:2] / digest[2:4] / path.name
        if path != expected or not expected.resolve().is_relative_to(self.root):
            raise DataError("bad_blob_uri", f"blob URI {uri[:200]!r} is outside this blob "
                            f"store ({self.root}); is FRAMEWIRE_BLOB_DIR the same on every "
                            "host?")
        return expected, digest


def inline_or_reference(
    data: bytes, max_inline_bytes: int, store: BlobStore
) -> tuple[bytes | None, str | None, str | None]:
    """Decide how bytes travel: (inline bytes, None, None) or (None, uri, sha256)."""
    if len(data) <= max_inline_bytes:
        return data, None, None
    uri, digest = store.put(data)
    return None, uri, digest


def resolve_payload(
    inline: bytes | None, uri: str | None, sha256: str | None, store: BlobStore
) -> bytes:
    """The one way consumers read bytes that may travel inline or by reference."""
    if inline is not None:
        return inline
    if uri:
        return store.get(uri, sha256)
    raise DataError("no_payload", "the record carries neither inline bytes nor a blob URI")
