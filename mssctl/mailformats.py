"""Maildir (Maildir++) and mbox (mboxrd) read and written: pure file work, no
store. What `mssctl import` reads and `mssctl export` writes.

A message read from a file becomes a `SourceMessage` (raw bytes with CRLF line
ends, as IMAP serves them; flags; INTERNALDATE); one that cannot be read becomes
a `SourceProblem` saying what and where, and reading goes on.

Conventions (Dovecot's where the formats leave room):
- Maildir++: the root is INBOX, ``.Sent`` is Sent, ``.Archives.2024`` is
  Archives/2024; names are modified UTF-7 (or UTF-8); a ``.`` or ``%`` inside one name is
  written ``%2E`` / ``%25``. Flags from the ``:2,`` suffix (S R F T D); keywords
  as lowercase letters named by ``dovecot-keywords``. INTERNALDATE: the file's
  mtime, else the delivery time at the start of the name.
- mbox: mboxrd (``>From `` quoting undone one level; mboxo files read the same
  way). Flags from ``Status:`` (R: \\Seen) and ``X-Status:`` (A F T D), keywords
  from ``X-Keywords:``; these headers (and ``Content-Length:``, ``X-UID:``,
  ``X-IMAP(base):``) are removed on import, as Dovecot does, and written on
  export. INTERNALDATE: the date of the ``From `` line (UTC).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from imapd.parser.mutf7 import MUTF7Error, decode, encode

MAILDIR_FLAGS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted",
                 "D": "\\Draft"}
FLAG_LETTERS = {v: k for k, v in MAILDIR_FLAGS.items()}
X_STATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
X_STATUS_LETTERS = {v: k for k, v in X_STATUS_FLAGS.items()}
MBOX_META_HEADERS = (b"status", b"x-status", b"x-keywords", b"content-length", b"x-uid",
                     b"x-imap", b"x-imapbase")
KEYWORDS_FILE = "dovecot-keywords"

_FROM_LINE = re.compile(
    rb"^From \S*\s+(?:\w{3}\s+)?(\w{3})\s+(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    rb"(?:\s+[A-Z]{3,4})?\s+(\d{4})")
_HEADER_START = re.compile(rb"^[!-9;-~]+[ \t]*:")
_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
     b"Dec"), 1)}


@dataclass(frozen=True, slots=True)
class SourceMessage:
    folder: tuple[str, ...]  # () is the root (INBOX, or the --folder prefix)
    raw: bytes
    flags: frozenset[str]
    internal_date: datetime | None
    where: str  # a file name, "file.mbox offset 1234", "imaps://host/Sent UID 7"


@dataclass(frozen=True, slots=True)
class SourceProblem:
    where: str
    why: str
    folder: tuple[str, ...] | None = None


def crlf(raw: bytes) -> bytes:
    """Line ends as IMAP has them: every bare LF becomes CRLF."""
    if b"\n" not in raw or b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def message_problem(raw: bytes) -> str | None:
    """Why these bytes are not a message we would store, or None."""
    if not raw.strip():
        return "empty"
    if not _HEADER_START.match(raw):
        return "not a message: it does not start with a header field"
    return None


# ---------------------------------------------------------------- names


def _unescape(part: str) -> str:
    return part.replace("%2E", ".").replace("%2e", ".").replace("%25", "%")


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(".", "%2E")


def maildir_folder(dirname: str) -> tuple[str, ...]:
    """``.Archives.2024`` -> ("Archives", "2024"). Raises ValueError."""
    parts = dirname[1:].split(".")
    if not all(parts):
        raise ValueError(f"empty name component in {dirname!r}")
    if not dirname.isascii():  # Dovecot's UTF-8 layout: names as they are
        return tuple(_unescape(p) for p in parts)
    try:
        return tuple(_unescape(decode(p.encode("ascii"))) for p in parts)
    except MUTF7Error:
        raise ValueError(f"{dirname!r} is not modified UTF-7") from None


def maildir_dirname(folder: tuple[str, ...]) -> str:
    return "." + ".".join(encode(_escape(p)).decode("ascii") for p in folder)


# ---------------------------------------------------------------- Maildir read


def _keywords(directory: Path) -> dict[str, str]:
    try:
        text = (directory / KEYWORDS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        if number.isdigit() and int(number) < 26 and name.strip():
            out[chr(ord("a") + int(number))] = name.strip()
    return out


def maildir_flags(name: str, keywords: dict[str, str] | None = None) -> frozenset[str]:
    """Flags of a Maildir file name's ``:2,`` info (unknown letters ignored)."""
    _, sep, info = name.rpartition(":2,")
    if not sep:
        return frozenset()
    kw = keywords or {}
    return frozenset(MAILDIR_FLAGS.get(c) or kw[c] for c in info if c in MAILDIR_FLAGS or c in kw)


def maildir_date(name: str, mtime: float | None) -> datetime | None:
    """The file's mtime, else the delivery time the name starts with."""
    if mtime is not None and mtime > 0:
        return datetime.fromtimestamp(int(mtime), UTC)
    head = name.split(".", 1)[0]
    if head.isdigit():
        return datetime.fromtimestamp(int(head), UTC)
    return None


def maildir_folders(root: Path) -> list[tuple[tuple[str, ...] | None, Path, str]]:
    """(folder or None when the name is not usable, directory, dir name) of a
    Maildir++ tree: the root first, then the subfolders sorted by name."""
    out: list[tuple[tuple[str, ...] | None, Path, str]] = [((), root, ".")]
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in (".", "..") or not entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            folder: tuple[str, ...] | None = maildir_folder(entry.name)
        except ValueError:
            folder = None
        out.append((folder, Path(entry.path), entry.name))
    return out


def _maildir_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for sub in ("cur", "new"):
        try:
            files.extend(sorted(p for p in (directory / sub).iterdir() if not p.name.startswith(".")))
        except FileNotFoundError:
            continue
    return files


def count_maildir(root: Path) -> int:
    return sum(len(_maildir_files(d)) for _, d, _ in maildir_folders(root))


def read_maildir(root: Path) -> Iterator[SourceMessage | SourceProblem]:
    """Every message of a Maildir++ tree, folder by folder. Raises OSError
    only when the root itself cannot be listed."""
    for folder, directory, dirname in maildir_folders(root):
        if folder is None:
            yield SourceProblem(str(directory), f"the folder name {dirname!r} is not valid here")
            continue
        try:
            files = _maildir_files(directory)
        except OSError as exc:
            yield SourceProblem(str(directory), exc.strerror or str(exc), folder)
            continue
        keywords = _keywords(directory)
        for path in files:
            try:
                with path.open("rb") as fh:
                    raw = fh.read()
                    mtime: float | None = os.fstat(fh.fileno()).st_mtime
            except OSError as exc:
                yield SourceProblem(str(path), f"unreadable: {exc.strerror or exc}", folder)
                continue
            yield SourceMessage(folder, crlf(raw), maildir_flags(path.name, keywords),
                                maildir_date(path.name, mtime), str(path))


# ---------------------------------------------------------------- Maildir write


class MaildirWriter:
    """Writes messages into a Maildir++ tree (folders created as needed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seq = 0
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._keywords: dict[Path, list[str]] = {}
        self._dirs: dict[tuple[str, ...], Path] = {}

    def _dir(self, folder: tuple[str, ...]) -> Path:
        known = self._dirs.get(folder)
        if known is not None:
            return known
        directory = self.root if not folder else self.root / maildir_dirname(folder)
        for sub in ("tmp", "new", "cur"):
            (directory / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder:
            (directory / "maildirfolder").touch()
        self._dirs[folder] = directory
        return directory

    def write_folder(self, folder: tuple[str, ...]) -> Path:
        """The folder's directory, created (an empty folder is exported too)."""
        return self._dir(folder)

    def _letters(self, directory: Path, flags: Iterable[str]) -> str:
        letters = sorted(FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS)
        keywords = [f for f in flags if not f.startswith("\\")]
        if keywords:
            known = self._keywords.setdefault(directory, [])
            for kw in sorted(keywords):
                if kw not in known and len(known) < 26:
                    known.append(kw)
                    (directory / KEYWORDS_FILE).write_text(
                        "".join(f"{i} {k}\n" for i, k in enumerate(known)), encoding="utf-8")
            letters += sorted(chr(ord("a") + known.index(k)) for k in keywords if k in known)
        return "".join(letters)

    def write(self, folder: tuple[str, ...], raw: bytes, flags: Iterable[str],
              internal_date: datetime) -> Path:
        directory = self._dir(folder)
        data = lf(raw)
        self._seq += 1
        stamp = int(internal_date.timestamp())
        base = f"{stamp}.M{self._seq}P{os.getpid()}Q{int(time.time())}.{self._host},S={len(data)}"
        tmp = directory / "tmp" / base
        with tmp.open("xb") as fh:
            fh.write(data)
        os.utime(tmp, (stamp, stamp))
        final = directory / "cur" / f"{base}:2,{self._letters(directory, list(flags))}"
        os.rename(tmp, final)
        return final


# ---------------------------------------------------------------- mbox read


def from_line_date(line: bytes) -> datetime | None:
    m = _FROM_LINE.match(line)
    if not m or m.group(1) not in _MONTHS:
        return None
    try:
        return datetime(int(m.group(6)), _MONTHS[m.group(1)], int(m.group(2)), int(m.group(3)),
                        int(m.group(4)), int(m.group(5) or 0), tzinfo=UTC)
    except ValueError:
        return None


def _split_headers(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header lines (each with its continuation lines) and the rest."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    end = min(ends) if ends else -1
    head, rest = (raw, b"") if end < 0 else (raw[:end + 1], raw[end + 1:])
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields, rest


def mbox_flags(raw: bytes) -> tuple[bytes, frozenset[str]]:
    """(the message without the mbox meta headers, its flags); LF line ends."""
    fields, rest = _split_headers(raw)
    flags: set[str] = set()
    kept: list[bytes] = []
    for f in fields:
        name, colon, value = f.partition(b":")
        key = name.strip().lower()
        if not colon or key not in MBOX_META_HEADERS:
            kept.append(f)
            continue
        text = value.decode("ascii", "replace").strip()
        if key == b"status" and "R" in text:
            flags.add("\\Seen")
        elif key == b"x-status":
            flags.update(X_STATUS_FLAGS[c] for c in text if c in X_STATUS_FLAGS)
        elif key == b"x-keywords":
            flags.update(k for k in text.replace(",", " ").split() if not k.startswith("\\"))
    return b"".join(kept) + rest, frozenset(flags)


def read_mbox(path: Path, folder: tuple[str, ...] = ()) -> Iterator[SourceMessage | SourceProblem]:
    """The messages of one mbox file. Raises OSError when it cannot be opened."""
    with path.open("rb") as fh:
        yield from _read_mbox(fh, path, folder)


def _read_mbox(fh: BinaryIO, path: Path, folder: tuple[str, ...]) -> Iterator[
        SourceMessage | SourceProblem]:
    offset = 0
    start: int | None = None
    date: datetime | None = None
    lines: list[bytes] = []
    previous_blank = True

    def finish() -> SourceMessage | SourceProblem:
        body = b"".join(lines)
        if body.endswith(b"\r\n\r\n"):
            body = body[:-2]  # the blank line before the next From line (CRLF file)
        elif body.endswith(b"\n\n"):
            body = body[:-1]  # the blank line before the next From line
        where = f"{path} offset {start}"
        cleaned, flags = mbox_flags(body)
        if date is None:
            return SourceProblem(where, "the From line has no date", folder)
        return SourceMessage(folder, crlf(cleaned), flags, date, where)

    try:
        for line in fh:
            if line.startswith(b"From ") and previous_blank:
                if start is not None:
                    yield finish()
                start, date, lines = offset, from_line_date(line.rstrip(b"\r\n")), []
            elif start is None:
                if line.strip():
                    yield SourceProblem(f"{path} offset {offset}",
                                        "not an mbox file: it does not start with a From line",
                                        folder)
                    return
            else:
                if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
                    line = line[1:]
                lines.append(line)
            previous_blank = line in (b"\n", b"\r\n")
            offset += len(line)
    except OSError as exc:
        yield SourceProblem(f"{path} offset {offset}", f"unreadable: {exc.strerror or exc}",
                            folder)
        return
    if start is not None:
        yield finish()


def count_mbox(path: Path) -> int:
    count, previous_blank = 0, True
    with path.open("rb") as fh:
        for line in fh:
            if previous_blank and line.startswith(b"From "):
                count += 1
            previous_blank = line in (b"\n", b"\r\n")
    return count


def mbox_files(path: Path) -> list[tuple[tuple[str, ...] | None, Path]]:
    """A file is one folder (the root); a directory holds ``<Maildir++ name>.mbox``
    files, as `export --format mbox` writes them (``INBOX.mbox`` is the root)."""
    if not path.is_dir():
        return [((), path)]
    out: list[tuple[tuple[str, ...] | None, Path]] = []
    for p in sorted(path.glob("*.mbox")):
        if p.stem == "INBOX":
            out.append(((), p))
            continue
        try:
            folder: tuple[str, ...] | None = maildir_folder("." + p.stem)
        except ValueError:
            folder = None
        out.append((folder, p))
    return out


def mbox_filename(folder: tuple[str, ...]) -> str:
    return (maildir_dirname(folder)[1:] if folder else "INBOX") + ".mbox"


# ---------------------------------------------------------------- mbox write


def mbox_entry(raw: bytes, flags: Iterable[str], internal_date: datetime) -> bytes:
    """One mboxrd entry: From line, headers with Status/X-Status/X-Keywords,
    body with ``From `` lines quoted, a blank line after."""
    flags = set(flags)
    fields, rest = _split_headers(lf(raw))
    fields = [f for f in fields if f.partition(b":")[0].strip().lower() not in MBOX_META_HEADERS]
    status = "RO" if "\\Seen" in flags else "O"
    x_status = "".join(sorted(X_STATUS_LETTERS[f] for f in flags if f in X_STATUS_LETTERS))
    meta = [f"Status: {status}\n".encode()]
    if x_status:
        meta.append(f"X-Status: {x_status}\n".encode())
    keywords = sorted(f for f in flags if not f.startswith("\\"))
    if keywords:
        meta.append(f"X-Keywords: {' '.join(keywords)}\n".encode())
    if fields and fields[-1] == b"\n":
        fields = fields[:-1]
    body = b"".join(fields) + b"".join(meta) + rest
    out = [b"From MAILER-DAEMON " + internal_date.astimezone(UTC).strftime(
        "%a %b %d %H:%M:%S %Y").encode() + b"\n"]
    for line in body.splitlines(keepends=True):
        if line.lstrip(b">").startswith(b"From "):
            line = b">" + line
        out.append(line)
    if not body.endswith(b"\n"):
        out.append(b"\n")
    out.append(b"\n")
    return b"".join(out)
