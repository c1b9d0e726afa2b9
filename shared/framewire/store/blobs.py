"""Where frames too large to ride in a record live (claim check): content-addressed files.

A blob is named by its SHA-256, so writing the same bytes twice stores them once and a reader
can verify what it got. URIs look like ``file:///abs/path/ab/cd/abcd....bin``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from framewire.errors import DataError, TransientError


class BlobStore:
    """Content-addressed blobs on a filesystem folder (shared by all services of a site)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes; returns (uri, sha256 hex). Idempotent."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / digest[:2] / digest[2:4] / f"{digest}.bin"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # write then rename, so a reader never sees a half-written blob
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, path)
            except OSError as exc:
                Path(tmp).unlink(missing_ok=True)
                raise TransientError(f"could not write blob {path}: {exc}") from exc
        return path.as_uri(), digest

    def get(self, uri: str, sha256: str | None = None) -> bytes:
        """Read a blob back, verifying its digest when given."""
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise DataError(
                "bad_blob_uri", f"blob URI {uri!r} is not a file:// URI this store reads"
            )
        try:
            data = Path(parsed.path).read_bytes()
        except FileNotFoundError:
            raise DataError(
                "blob_missing",
                f"blob {uri} is gone (retention or a different FRAMEWIRE_BLOB_DIR on this host?)",
            ) from None
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise DataError("blob_corrupt", f"blob {uri} does not match its SHA-256 {sha256}")
        return data


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
