"""Where frames too large to ride in a record live (claim check): content-addressed files.

A blob is named by its SHA-256, so writing the same bytes twice stores them once and a reader
can verify what it got. URIs look like ``file:///abs/path/ab/cd/abcd....bin``.

A reference comes from a record, and a record can come from anyone who can write to the
broker: the store reads only its own blobs. A URI that is not this store's
``<root>/aa/bb/<sha256>.bin`` form, resolves outside the root (``..``, a symlink), names
something other than a regular file, or is larger than the cap is refused (``bad_blob_uri``)
without the path being opened; what is read must match the SHA-256 in its name.

Encryption at rest (optional, ``blob_keys_file`` or ``FRAMEWIRE_BLOB_KEY``): a blob is then
``FWB1``, the key id (one length byte and its ASCII), a 12-byte nonce and the AES-GCM
ciphertext with its tag, the digest as associated data (a blob moved to another name does not
decrypt). The name stays the SHA-256 of the plaintext (same bytes, one blob), checked after
decrypting. The key id travels with the blob, so an old key read beside the current one
lets keys rotate; a plain blob (written before encryption was turned on) is still read.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from framewire.errors import ConfigError, DataError, SystemicError, TransientError

if TYPE_CHECKING:
    from framewire.config import Settings

_BLOB_NAME = re.compile(r"^(?P<digest>[0-9a-f]{64})\.bin$")
# the largest blob a reader takes: frames are capped at ingest (max_upload_bytes, 20 MiB by
# default) and raw letterboxed pixels are a few MiB
MAX_BLOB_BYTES = 64 * 1024 * 1024

ENCRYPTED_MAGIC = b"FWB1"
_NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEY_FIX = ("write KEYID:BASE64KEY with a 32-byte key, e.g. from python -c \"import os,base64;"
            "print('k1:'+base64.b64encode(os.urandom(32)).decode())\"")


@dataclass(frozen=True)
class BlobKeys:
    """The keys blobs are encrypted with: ``current`` writes, every key in ``by_id`` reads."""

    current: str | None = None
    by_id: dict[str, bytes] = field(default_factory=dict)

    @property
    def encrypting(self) -> bool:
        return self.current is not None


def parse_blob_key(line: str, where: str) -> tuple[str, bytes]:
    """(key id, 32-byte key) from ``KEYID:BASE64KEY``; ValueError naming ``where`` and the fix
    (never the key)."""
    key_id, colon, encoded = line.strip().partition(":")
    if not colon or not _KEY_ID.match(key_id):
        raise ValueError(f"{where} is not KEYID:BASE64KEY (a key id of letters, digits, . _ -); "
                         f"{_KEY_FIX}")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the key of {key_id!r} is not base64; {_KEY_FIX}") from None
    if len(key) != 32:
        raise ValueError(f"{where}: the key of {key_id!r} is {len(key)} bytes, AES-256-GCM "
                         f"takes 32; {_KEY_FIX}")
    return key_id, key


def load_blob_keys(env_key: str | None, keys_file: Path | None) -> BlobKeys:
    """The keys from ``FRAMEWIRE_BLOB_KEY`` (current) and ``blob_keys_file`` (first line
    current unless the variable is set, the others read only); ValueError saying the fix."""
    pairs: list[tuple[str, bytes]] = []
    if env_key:
        pairs.append(parse_blob_key(env_key, "FRAMEWIRE_BLOB_KEY"))
    if keys_file is not None:
        try:
            mode = keys_file.stat().st_mode
            text = keys_file.read_text()
        except OSError as exc:
            raise ValueError(f"blob_keys_file {keys_file}: {exc.strerror}; fix the path "
                             "(FRAMEWIRE_BLOB_KEYS_FILE)") from None
        if mode & 0o077:
            raise ValueError(f"blob_keys_file {keys_file} is readable by others (mode "
                             f"{stat.S_IMODE(mode):04o}); chmod 600 {keys_file}")
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            raise ValueError(f"blob_keys_file {keys_file} holds no key; {_KEY_FIX}, one a line, "
                             "the current key first")
        pairs += [parse_blob_key(line, f"blob_keys_file {keys_file} line {n}")
                  for n, line in lines]
    by_id: dict[str, bytes] = {}
    for key_id, key in pairs:
        if by_id.setdefault(key_id, key) != key:
            raise ValueError(f"blob key id {key_id!r} is given twice with different keys; a key "
                             "id names one key for good (blobs carry it): give the new key a "
                             "new id")
    return BlobKeys(pairs[0][0] if pairs else None, by_id)


# a write failed for want of space (disk full, quota): no fault of the bytes written
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

class BlobStore:
    """Content-addressed blobs on a filesystem folder (shared by all services of a site)."""

    def __init__(self, root: Path, max_bytes: int = MAX_BLOB_BYTES,
                 keys: BlobKeys | None = None) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.keys = keys or BlobKeys()

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        """The site's blob store: its folder and its encryption keys (ConfigError if they
        cannot be read)."""
        env_key = settings.blob_key.get_secret_value() if settings.blob_key else None
        try:
            keys = load_blob_keys(env_key, settings.blob_keys_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(settings.resolved_blob_dir, keys=keys)

    def put(self, data: bytes) -> tuple[str, str]:
        """Store bytes (encrypted with the current key, if any); returns (uri, sha256 hex).
        Idempotent."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / digest[:2] / digest[2:4] / f"{digest}.bin"
        if not path.exists():
            stored = self._seal(data, digest)
            tmp = None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # write then rename, so a reader never sees a half-written blob
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                with os.fdopen(fd, "wb") as out:
                    out.write(stored)
                os.replace(tmp, path)
            except OSError as exc:
                if tmp is not None:
                    Path(tmp).unlink(missing_ok=True)
                if exc.errno in NO_SPACE:  # every blob would fail: pause
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
        if data.startswith(ENCRYPTED_MAGIC):
            try:
                data = self._open(data, digest, uri)
            except DataError:
                # a plain blob that happens to begin with the magic is still its own bytes
                if hashlib.sha256(data).hexdigest() != digest:
                    raise
                return data
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError("blob_corrupt", f"blob {uri} does not match its SHA-256 {digest}")
        return data

    def _seal(self, data: bytes, digest: str) -> bytes:
        """The bytes a blob is stored as: ``data``, or encrypted with the current key."""
        if self.keys.current is None:
            return data
        key_id = self.keys.current.encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self.keys.by_id[self.keys.current]).encrypt(
            nonce, data, digest.encode())
        return ENCRYPTED_MAGIC + bytes([len(key_id)]) + key_id + nonce + sealed

    def _open(self, stored: bytes, digest: str, uri: str) -> bytes:
        """The plaintext of an encrypted blob; ``blob_corrupt`` saying why when it cannot be."""
        at = len(ENCRYPTED_MAGIC)
        id_len = stored[at] if len(stored) > at else 0
        key_id = stored[at + 1:at + 1 + id_len].decode("ascii", "replace")
        body = at + 1 + id_len
        if not id_len or len(stored) < body + _NONCE_BYTES + 16:
            raise DataError("blob_corrupt", f"blob {uri} is an encrypted blob cut short")
        key = self.keys.by_id.get(key_id)
        if key is None:
            raise DataError(
                "blob_corrupt", f"blob {uri} is encrypted with key {key_id!r}, which this "
                "process does not have: add that key (a KEYID:BASE64KEY line after the current "
                "one) to blob_keys_file (FRAMEWIRE_BLOB_KEYS_FILE)")
        nonce = stored[body:body + _NONCE_BYTES]
        try:
            return AESGCM(key).decrypt(nonce, stored[body + _NONCE_BYTES:], digest.encode())
        except InvalidTag:
            raise DataError("blob_corrupt", f"blob {uri} does not decrypt with key {key_id!r}: "
                            "altered, or moved from another name") from None

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


# the most a frame may weigh inside its Kafka record (producers' message.max.bytes is 16 MiB,
# and the record has more than the image in it)
PRIVATE_INLINE_LIMIT = 15 * 1024 * 1024


def inline_or_reference(
    data: bytes, max_inline_bytes: int, store: BlobStore, private: bool = False
) -> tuple[bytes | None, str | None, str | None]:
    """Decide how bytes travel: (inline bytes, None, None) or (None, uri, sha256).

    ``private`` bytes (a frame under privacy mode) never go to the store: they travel inline
    up to ``PRIVATE_INLINE_LIMIT``, and larger ones are refused (``too_large``)."""
    if private and len(data) > PRIVATE_INLINE_LIMIT:
        raise DataError(
            "too_large", f"{len(data)} bytes cannot travel inside a Kafka record (at most "
            f"{PRIVATE_INLINE_LIMIT}), and privacy mode keeps raw frames off the blob store; "
            "lower the camera's resolution or quality, or turn privacy_mode off for it")
    if private or len(data) <= max_inline_bytes:
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
