"""Encryption at rest: AES-256-GCM over every stored body and metadata blob.

The keys live in a file outside the database, one ``keyid:base64(32 bytes)``
per line; the last line is the current key (new blobs are written with it) and
the others stay readable until `SqlStore.reencrypt` has moved every blob off
them. The file must be private (0600): it is the only thing that separates a
stolen database file from readable health data.

Blob format: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. The nonce is
random per blob (96 bits; the number of blobs per key stays far below the 2^32
bound for random GCM nonces). The associated data names the kind of row the blob
belongs to, so a body cannot be passed off as metadata or a queue entry.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12
TAG_SIZE = 16  # AES-GCM tag at the end of every blob
KEY_SIZE = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")

# Associated data per kind of row (bump the suffix if a format ever changes).
AAD_BODY = b"mss:body:1"
AAD_META = b"mss:meta:1"
AAD_QUEUE = b"mss:queue:1"
AAD_TOTP = b"mss:totp:1"
AAD_SORT_KEYS = b"mss:sortkeys:1"


class KeyFileError(Exception):
    """The key file is missing, unreadable, badly formed or too open."""


class DecryptionError(Exception):
    """A blob did not authenticate (wrong key, tampering, wrong row kind)."""


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, AESGCM]
    current_id: str

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            st = path.stat()
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read key file {path}") from exc
        if st.st_mode & 0o077:
            raise KeyFileError(f"key file {path} must not be readable by group/others (chmod 600)")
        keys: dict[str, AESGCM] = {}
        current = ""
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key_id, sep, b64 = line.partition(":")
            try:
                raw = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if not sep or not _KEY_ID.match(key_id) or len(raw) != KEY_SIZE:
                # Never echo the line: it may hold key material.
                raise KeyFileError(f"{path}:{lineno}: expected keyid:base64(32 bytes)")
            if key_id in keys:
                raise KeyFileError(f"{path}:{lineno}: duplicate key id {key_id!r}")
            keys[key_id] = AESGCM(raw)
            current = key_id
        if not keys:
            raise KeyFileError(f"key file {path} holds no key")
        return cls(keys, current)

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        """(key id, blob) under the current key."""
        nonce = os.urandom(NONCE_SIZE)
        return self.current_id, nonce + self.keys[self.current_id].encrypt(nonce, plaintext, aad)

    def encrypt_with(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self.keys[key_id].encrypt(nonce, plaintext, aad)

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise DecryptionError(f"unknown key id {key_id!r}")
        try:
            return key.decrypt(bytes(blob[:NONCE_SIZE]), bytes(blob[NONCE_SIZE:]), aad)
        except InvalidTag as exc:
            raise DecryptionError("blob does not authenticate") from exc


    def decrypt_many(self, key_ids: Sequence[str], blobs: Sequence[bytes | memoryview],
                     aad: bytes) -> list[bytes]:
        """`decrypt` of each blob under the key named beside it: one loop
        with the key looked up once (a call per blob through `decrypt` was
        a third of the cost of reading a 100,000-message folder's sort
        keys). Raises DecryptionError for the first that does not
        authenticate or names an unknown key."""
        wanted = set(key_ids)
        unknown = wanted - self.keys.keys()
        if unknown:
            raise DecryptionError(f"unknown key id {min(unknown)!r}")
        n = NONCE_SIZE
        try:
            if len(wanted) == 1:  # the usual case: no key rotation under way
                dec = self.keys[next(iter(wanted))].decrypt
                return [dec(b[:n], b[n:], aad) for b in blobs]
            keys = self.keys
            return [keys[k].decrypt(b[:n], b[n:], aad)
                    for k, b in zip(key_ids, blobs, strict=True)]
        except InvalidTag as exc:
            raise DecryptionError("blob does not authenticate") from exc


def _key_line(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode('ascii')}\n"


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_APPEND)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_key_file(path: Path) -> str:
    """Creates a new key file (0600) with one key; returns its id.
    Refuses to overwrite an existing file (FileExistsError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key_id = "k1"
    _write_private(path, _key_line(key_id), exclusive=True)
    return key_id


def add_key(path: Path) -> str:
    """Appends a new key, which becomes current; returns its id. Existing
    blobs stay readable; `SqlStore.reencrypt` moves them to the new key."""
    ring = KeyRing.load(path)
    numbers = [int(k[1:]) for k in ring.keys if re.fullmatch(r"k\d+", k)]
    key_id = f"k{max(numbers, default=0) + 1}"
    while key_id in ring.keys:  # hand-written ids may collide with the pattern
        key_id = f"k{secrets.token_hex(4)}"
    text = path.read_text(encoding="ascii")
    prefix = "" if not text or text.endswith("\n") else "\n"
    _write_private(path, prefix + _key_line(key_id), exclusive=False)
    return key_id
