"""Acceptance: message content is encrypted at rest. A phrase in the Subject
and another in the body of a stored message (delivered, appended, copied and
queued) appear nowhere in the database file nor its -wal file, and not in any
column either (metadata included); the key file is private; blobs are bound
to their row kind."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text, update

from storage import open_store
from storage.crypto import (
    AAD_BODY,
    AAD_META,
    DecryptionError,
    KeyFileError,
    KeyRing,
    add_key,
    generate_key_file,
)
from storage.interface import AccountClass, Delivery, MailboxType
from storage.models import BodyRow

SUBJECT_PHRASE = "Resultats biopsie Zebulon Quatremare"
BODY_PHRASE = "carcinome lobulaire infiltrant du patient Zebulon"
ADDRESS_IN_HEADER = "zebulon.quatremare@patients.test"


def _message() -> bytes:
    return (
        f"From: Labo <labo@hopital.test>\r\nTo: Dr <dr@hopital.test>\r\n"
        f"Cc: {ADDRESS_IN_HEADER}\r\nSubject: {SUBJECT_PHRASE}\r\n"
        f"Message-ID: <zq1@hopital.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{BODY_PHRASE}\r\n"
    ).encode()


def _needles() -> list[bytes]:
    out = []
    for phrase in (SUBJECT_PHRASE, BODY_PHRASE, ADDRESS_IN_HEADER, "Zebulon", "Quatremare"):
        for enc in ("utf-8", "utf-16-le"):
            out.append(phrase.encode(enc))
    return out


def _assert_absent(path: Path) -> None:
    data = path.read_bytes()
    for needle in _needles():
        assert needle not in data, f"{needle!r} found in {path.name}"


def test_phrases_not_in_database_nor_wal(tmp_path: Path) -> None:
    key = tmp_path / "keys"
    generate_key_file(key)
    db = tmp_path / "mss.db"
    store = open_store(f"sqlite:///{db}", key, create=True)
    store.add_domain("hopital.test")
    acc = store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    org = store.add_mailbox("cardio@hopital.test", MailboxType.ORG)
    inbox = store.get_folder(mb.id, "INBOX")
    store.deliver(Delivery(_message(), (mb.id, org.id)))
    store.append(inbox.id, _message())
    store.copy(inbox.id, [1], store.get_folder(mb.id, "Archive").id)
    store.enqueue("dr@hopital.test", ["x@ext.test"], _message())

    # The store can read it all back ...
    info = store.message_infos(inbox.id, [1])[0]
    assert info.metadata["envelope"]["subject"] == SUBJECT_PHRASE
    assert BODY_PHRASE.encode() in store.message_body(inbox.id, 2)

    # ... while the files hold none of it: the WAL (still there, store open) ...
    wal = tmp_path / "mss.db-wal"
    assert wal.exists() and wal.stat().st_size > 0
    _assert_absent(db)
    _assert_absent(wal)
    # ... nor any column of any row, read through SQL (metadata included).
    with store.engine.connect() as c:
        for table in inspect(c).get_table_names():
            for row in c.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608
                for value in row:
                    blob = value if isinstance(value, bytes) else str(value).encode()
                    for needle in _needles():
                        assert needle not in blob, f"{needle!r} in table {table}"
    store.close()
    # After the last connection closed, the WAL was checkpointed into the file.
    _assert_absent(db)
    for extra in tmp_path.glob("mss.db*"):
        _assert_absent(extra)


def test_key_file_private_and_validated(tmp_path: Path) -> None:
    key = tmp_path / "keys"
    first = generate_key_file(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        generate_key_file(key)
    second = add_key(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ring = KeyRing.load(key)
    assert ring.current_id == second and set(ring.keys) == {first, second}
    os.chmod(key, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyRing.load(key)
    bad = tmp_path / "bad"
    bad.write_text("k1:notbase64!!\n")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError) as err:
        KeyRing.load(bad)
    assert "notbase64" not in str(err.value)  # key material never echoed
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    empty.chmod(0o600)
    with pytest.raises(KeyFileError):
        KeyRing.load(empty)
    with pytest.raises(KeyFileError):
        KeyRing.load(tmp_path / "missing")


def test_blob_format_and_binding(tmp_path: Path) -> None:
    key = tmp_path / "keys"
    generate_key_file(key)
    ring = KeyRing.load(key)
    kid, blob1 = ring.encrypt(b"same", AAD_BODY)
    _, blob2 = ring.encrypt(b"same", AAD_BODY)
    assert blob1 != blob2  # random nonce per blob
    assert len(blob1) == 12 + len(b"same") + 16
    assert ring.decrypt(kid, blob1, AAD_BODY) == b"same"
    with pytest.raises(DecryptionError):
        ring.decrypt(kid, blob1, AAD_META)  # a body is not metadata
    tampered = blob1[:-1] + bytes([blob1[-1] ^ 1])
    with pytest.raises(DecryptionError):
        ring.decrypt(kid, tampered, AAD_BODY)
    with pytest.raises(DecryptionError):
        ring.decrypt("nope", blob1, AAD_BODY)


def test_decrypt_many_as_decrypt_one_by_one(tmp_path: Path) -> None:
    """The bulk form the sort keys are read with: each blob under its own
    key (one key, or two during a rotation; memoryviews as PostgreSQL
    gives them), and the same refusals as `decrypt`."""
    key = tmp_path / "keys"
    generate_key_file(key)
    old = KeyRing.load(key)
    blobs = [old.encrypt(b"m%d" % i, AAD_META) for i in range(3)]
    assert old.decrypt_many([k for k, _ in blobs], [b for _, b in blobs], AAD_META) == [
        b"m0", b"m1", b"m2"]
    add_key(key)
    ring = KeyRing.load(key)
    blobs.append(ring.encrypt(b"new", AAD_META))
    ids, data = [k for k, _ in blobs], [memoryview(b) for _, b in blobs]
    assert len(set(ids)) == 2
    assert ring.decrypt_many(ids, data, AAD_META) == [b"m0", b"m1", b"m2", b"new"]
    assert ring.decrypt_many([], [], AAD_META) == []
    with pytest.raises(DecryptionError):
        ring.decrypt_many(ids, data, AAD_BODY)  # metadata is not a body
    tampered = bytes(data[1][:-1]) + bytes([data[1][-1] ^ 1])
    with pytest.raises(DecryptionError):
        ring.decrypt_many(ids[:2], [data[0], tampered], AAD_META)
    with pytest.raises(DecryptionError):
        ring.decrypt_many(["k1", "nope"], data[:2], AAD_META)
    with pytest.raises(DecryptionError):
        old.decrypt_many(ids, data, AAD_META)  # the new key unknown to it


def test_swapped_blobs_do_not_decrypt(store: Any) -> None:
    """Copying the metadata blob over the body (same key) must not yield data."""
    acc = store.add_account("dr@hopital.test", "Dr", AccountClass.PRACTITIONER)
    mb = store.add_mailbox("dr@hopital.test", MailboxType.PER, owner_account_id=acc.id)
    inbox = store.get_folder(mb.id, "INBOX")
    store.append(inbox.id, _message())
    with store.engine.begin() as c:
        c.execute(update(BodyRow).values(body=BodyRow.meta))
        assert c.execute(select(BodyRow.key_id)).scalar()
    with pytest.raises(DecryptionError):
        store.message_body(inbox.id, 1)
