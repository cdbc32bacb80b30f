"""A remote IMAP account read over TLS (imaplib): what `mssctl import --imap`
takes mail from. LIST gives the folders and the hierarchy separator; each
folder is EXAMINEd (read-only: nothing changes on the source) and its
messages fetched in chunks with ``UID FETCH (UID FLAGS INTERNALDATE
BODY.PEEK[])``. A dropped connection ends the reading with a `SourceProblem`
saying where (`RemoteDropped`); the caller has committed what came before."""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from imapd.parser.mutf7 import MUTF7Error, decode
from mssctl.mailformats import SourceMessage, SourceProblem

FETCH_CHUNK = 100
FETCH_OCTETS = 16 * 1024 * 1024  # what one FETCH response may hold in memory, about
_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<sep>"(?:\\.|[^"])*"|NIL) (?P<name>.*)$')
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_MESSAGES = re.compile(rb"\bMESSAGES (\d+)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')


class RemoteError(Exception):
    """The remote server dropped us or refused the login: reading stops."""


class RemoteRefused(RemoteError):
    """The remote server refused to open one folder: the others go on."""


@dataclass(frozen=True, slots=True)
class RemoteFolder:
    name: str  # as the server spells it (decoded from modified UTF-7)
    wire: bytes  # as sent back in EXAMINE
    folder: tuple[str, ...] | None  # None: the name is not valid here
    why: str = ""


def _unquote(token: bytes) -> bytes:
    if token.startswith(b'"') and token.endswith(b'"') and len(token) >= 2:
        return re.sub(rb"\\(.)", rb"\1", token[1:-1])
    return token


def parse_list(lines: list[object]) -> tuple[list[tuple[bytes, bytes, str]], bytes | None]:
    """imaplib's LIST data -> ([(attributes, wire name, decoded name)], separator)."""
    out: list[tuple[bytes, bytes, str]] = []
    sep: bytes | None = None
    items = iter(lines)
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            head, literal = item
            m = _LIST.match(head)
            wire = literal
        else:
            assert isinstance(item, bytes)
            m = _LIST.match(item)
            wire = _unquote(m.group("name")) if m else b""
        if not m:
            continue
        if m.group("sep") != b"NIL":
            sep = _unquote(m.group("sep"))
        try:
            name = decode(wire)
        except MUTF7Error:
            name = wire.decode("utf-8", "replace")
        out.append((m.group("attrs"), wire, name))
    return out, sep


def map_folder(name: str, sep: bytes | None) -> tuple[tuple[str, ...] | None, str]:
    """A remote name -> our folder components (INBOX is the root)."""
    if name.upper() == "INBOX":
        return (), ""
    separator = sep.decode("utf-8", "replace") if sep else None
    parts = tuple(name.split(separator)) if separator else (name,)
    if parts[0].upper() == "INBOX" and len(parts) > 1:
        parts = parts[1:]  # Cyrus/Courier: INBOX.Sent is Sent
    if not all(parts):
        return None, f"the folder name {name!r} has an empty level"
    if separator != "/" and any("/" in p for p in parts):
        return None, f"the folder name {name!r} holds '/', the hierarchy separator here"
    return parts, ""


def _quoted(wire: bytes) -> str:
    return '"' + wire.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"') + '"'


def _date(text: bytes) -> datetime | None:
    try:
        return datetime.strptime(text.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


class RemoteAccount:
    """One logged-in connection to the remote account."""

    def __init__(self, host: str, port: int, user: str, password: str,
                 context: ssl.SSLContext, *, starttls: bool = False, timeout: float = 60) -> None:
        self.label = f"imap{'' if starttls else 's'}://{user}@{host}:{port}"
        try:
            if starttls:
                self.conn: imaplib.IMAP4 = imaplib.IMAP4(host, port, timeout=timeout)
                self.conn.starttls(context)
            else:
                self.conn = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise RemoteError(f"cannot connect to {host}:{port}: {exc}") from None
        try:
            self.conn.login(user, password)
        except imaplib.IMAP4.error as exc:
            self.logout()
            raise RemoteError(f"{self.label}: login refused: {exc}") from None
        except OSError as exc:
            raise RemoteError(f"{self.label}: connection lost at login: {exc}") from None

    def folders(self) -> list[RemoteFolder]:
        try:
            typ, data = self.conn.list('""', "*")
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise RemoteError(f"{self.label}: connection lost during LIST: {exc}") from None
        if typ != "OK":
            raise RemoteError(f"{self.label}: LIST refused")
        entries, sep = parse_list(list(data))
        out = []
        for attrs, wire, name in entries:
            if b"\\noselect" in attrs.lower() or b"\\nonexistent" in attrs.lower():
                continue
            folder, why = map_folder(name, sep)
            out.append(RemoteFolder(name, wire, folder, why))
        return out

    def count(self, folders: list[RemoteFolder]) -> int | None:
        """How many messages these folders hold (STATUS MESSAGES), for the
        progress line; None when the server does not say."""
        total = 0
        for folder in folders:
            try:
                typ, data = self.conn.status(_quoted(folder.wire), "(MESSAGES)")
            except (OSError, imaplib.IMAP4.error):
                return None
            m = _MESSAGES.search(data[0]) if typ == "OK" and data and isinstance(
                data[0], bytes) else None
            if m is None:
                return None
            total += int(m.group(1))
        return total

    def uids(self, folder: RemoteFolder) -> list[tuple[int, int]]:
        """EXAMINEs the folder: (UID, RFC822.SIZE) of each message, by UID."""
        try:
            typ, data = self.conn.select(_quoted(folder.wire), readonly=True)
            if typ != "OK":
                raise RemoteRefused(f"EXAMINE {folder.name} refused: {data!r}")
            typ, data = self.conn.uid("SEARCH", "ALL")
            if typ != "OK":
                raise RemoteRefused(f"UID SEARCH in {folder.name} refused: {data!r}")
            if not b"".join(d for d in data if d).strip():
                return []
            typ, data = self.conn.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise RemoteError(f"{self.label}: connection lost opening {folder.name}: "
                              f"{exc}") from None
        if typ != "OK":
            raise RemoteRefused(f"UID FETCH (RFC822.SIZE) in {folder.name} refused: {data!r}")
        sizes: dict[int, int] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes) and (m_uid := _UID.search(line)) and (
                    m_size := _SIZE.search(line)):
                sizes[int(m_uid.group(1))] = int(m_size.group(1))
        return sorted(sizes.items())

    def messages(self, folder: RemoteFolder, sized: list[tuple[int, int]], max_size: int
                 ) -> Iterator[SourceMessage | SourceProblem]:
        """The messages of the EXAMINEd folder (call `uids` first), fetched
        FETCH_CHUNK messages or FETCH_OCTETS at a time; one larger than
        `max_size` is refused without being downloaded. Raises RemoteError
        when the connection drops."""
        assert folder.folder is not None
        for chunk in self._chunks(folder, sized, max_size):
            if isinstance(chunk, SourceProblem):
                yield chunk
                continue
            try:
                typ, data = self.conn.uid("FETCH", ",".join(map(str, chunk)),
                                          "(UID FLAGS INTERNALDATE BODY.PEEK[])")
            except (OSError, imaplib.IMAP4.abort) as exc:
                raise RemoteError(f"{self.label}: connection lost in {folder.name} "
                                  f"fetching UIDs {chunk[0]}:{chunk[-1]}: {exc}") from None
            if typ != "OK":
                for uid in chunk:
                    yield SourceProblem(f"{self.label}/{folder.name} UID {uid}",
                                        "FETCH refused", folder.folder)
                continue
            got: set[int] = set()
            pending = list(data)
            for n, item in enumerate(pending):
                if not isinstance(item, tuple):
                    continue
                head, raw = item
                tail = pending[n + 1] if n + 1 < len(pending) else b""
                meta = head + (tail if isinstance(tail, bytes) else b"")
                m_uid = _UID.search(meta)
                if not m_uid:
                    continue
                uid = int(m_uid.group(1))
                got.add(uid)
                m_flags, m_date = _FLAGS.search(meta), _DATE.search(meta)
                flags = frozenset(f for f in (m_flags.group(1).decode("utf-8", "replace").split()
                                              if m_flags else ()) if f != "\\Recent")
                yield SourceMessage(folder.folder, raw, flags,
                                    _date(m_date.group(1)) if m_date else None,
                                    f"{self.label}/{folder.name} UID {uid}")
            for uid in chunk:
                if uid not in got:
                    yield SourceProblem(f"{self.label}/{folder.name} UID {uid}",
                                        "the server sent no body (expunged meanwhile?)",
                                        folder.folder)

    def _chunks(self, folder: RemoteFolder, sized: list[tuple[int, int]], max_size: int
                ) -> Iterator[list[int] | SourceProblem]:
        chunk: list[int] = []
        octets = 0
        for uid, size in sized:
            if size > max_size:
                yield SourceProblem(f"{self.label}/{folder.name} UID {uid}",
                                    f"{size} bytes, larger than limits.message_size "
                                    f"({max_size}); not downloaded", folder.folder)
                continue
            if chunk and (len(chunk) >= FETCH_CHUNK or octets + size > FETCH_OCTETS):
                yield chunk
                chunk, octets = [], 0
            chunk.append(uid)
            octets += size
        if chunk:
            yield chunk

    def logout(self) -> None:
        try:
            self.conn.logout()
        except Exception:  # noqa: BLE001, S110 - leaving anyway
            pass
