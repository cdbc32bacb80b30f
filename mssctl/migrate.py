"""`mssctl import` and `mssctl export`: mail brought into a box from a Maildir
tree, an mbox file or a remote IMAP account, and taken out to Maildir or mbox.

Import goes through the store's append path (`append_many`, as IMAP APPEND
stores), in batches: every batch is one committed transaction, so an
interrupted import keeps what it committed. What is already there is
recognised by a SHA-256 digest of the raw message (CRLF line ends) kept per
destination folder: computed from the folder's own messages when the run
starts, so it needs no bookkeeping of its own, cannot disagree with what was
really committed (a crash between a commit and a record of it), and works
whatever the source (a Maildir renamed by a client, an mbox re-exported, a
remote account whose UIDVALIDITY changed). Identical copies are counted: a
source holding the same message twice gets it twice. The price is one
decryption pass over the destination folder per run.

One audit event per run (``import`` / ``export``, admin actor, counts and the
source or destination; never message content).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mssctl.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_config_option,
    admin_change,
    describe_store_error,
    load,
    opened_store,
    store_errors,
)
from mssctl.mailformats import (
    MaildirWriter,
    SourceMessage,
    SourceProblem,
    count_maildir,
    count_mbox,
    mbox_entry,
    mbox_filename,
    mbox_files,
    message_problem,
    read_maildir,
    read_mbox,
)

if TYPE_CHECKING:
    from storage.interface import AppendItem, Folder, Mailbox, MessageStore

BATCH_MESSAGES = 200
BATCH_OCTETS = 16 * 1024 * 1024
SEPARATOR = "/"

IMPORT_HELP = (
    "Brings mail into a box: a Maildir++ tree (--maildir), an mbox file or a directory of "
    "<folder>.mbox files (--mbox), or a whole remote IMAP account over TLS (--imap). Folders "
    "keep their hierarchy under --folder (default: the top level; the source's INBOX or root "
    "goes to INBOX, or to --folder itself). Flags and INTERNALDATE are kept. Messages are "
    "committed in batches: an interrupted import keeps what it committed, and running the "
    "same command again resumes. What is already there is recognised by a SHA-256 digest of "
    "the raw message, per destination folder, read from the folder itself: robust whatever "
    "the source (renamed files, changed UIDVALIDITY), never out of step with what was "
    "committed; a second run imports nothing new. A message that cannot be taken (broken, "
    "unreadable, too large, a folder name not valid here) is reported with where and why "
    "and the rest goes on; the exit status is then 1.")


# ---------------------------------------------------------------- progress


class Progress:
    """A line rewritten in place on a terminal (count, rate, ETA); silent
    when the stream is not a terminal. `note` prints a line above it."""

    def __init__(self, stream: TextIO, verb: str, total: int | None = None,
                 unit: str = "messages") -> None:
        self.stream = stream
        self.verb = verb
        self.total = total
        self.unit = unit
        self.done = 0
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self._shown = 0.0
        self._width = 0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._shown >= 0.2:
            self._shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        text = f"{self.verb}: {self.done}"
        if self.total:
            text += f"/{self.total}"
        text += f" {self.unit}, {rate:.0f}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def note(self, line: str, stream: TextIO) -> None:
        self.clear()
        print(line, file=stream, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---------------------------------------------------------------- import


def digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


class Stopped(Exception):
    """The import cannot go on (database or remote server gone)."""


@dataclass
class _Target:
    folder: Folder | None
    name: str
    why: str = ""  # why nothing goes into it (folder is None)
    present: Counter[bytes] = field(default_factory=Counter)


@dataclass
class _Pending:
    item: AppendItem
    where: str
    key: bytes


class Importer:
    """Puts `SourceMessage`s into one box, in batches per folder."""

    def __init__(self, store: MessageStore, mailbox: Mailbox, prefix: tuple[str, ...],
                 progress: Progress, errors: TextIO, *, max_size: int,
                 batch_messages: int = BATCH_MESSAGES) -> None:
        self.store = store
        self.mailbox = mailbox
        self.prefix = prefix
        self.progress = progress
        self.errors = errors
        self.max_size = max_size
        self.batch_messages = batch_messages
        self.seen_account = mailbox.owner_account_id if mailbox.private_seen else None
        self.imported = self.skipped = self.refused = 0
        self.folders_created: list[str] = []
        self._targets: dict[tuple[str, ...], _Target] = {}
        self._batch: list[_Pending] = []
        self._batch_target: _Target | None = None
        self._batch_octets = 0

    # -- folders

    def target_name(self, folder: tuple[str, ...]) -> str:
        # In NFC, as the store takes new names (RFC 6855 3): a Maildir made
        # on macOS names "Résultats" with a combining accent.
        parts = tuple(unicodedata.normalize("NFC", p) for p in self.prefix + folder)
        return SEPARATOR.join(parts) if parts else "INBOX"

    def _target(self, folder: tuple[str, ...]) -> _Target:
        target = self._targets.get(folder)
        if target is None:
            target = self._targets[folder] = self._open(folder)
        return target

    def _open(self, folder: tuple[str, ...]) -> _Target:
        from storage.interface import (
            AlreadyExists,
            InvalidName,
            NotFound,
            StoreError,
            StoreUnavailable,
        )

        name = self.target_name(folder)
        bad = [p for p in folder if SEPARATOR in p or not p.strip() or any(
            ord(c) < 0x20 or c == "\x7f" for c in p)]
        if bad:
            return _Target(None, name, f"the folder name {bad[0]!r} is not valid here")
        try:
            try:
                found = self.store.get_folder(self.mailbox.id, name)
            except NotFound:
                try:
                    found = self.store.create_folder(self.mailbox.id, name)
                    self.folders_created.append(name)
                except AlreadyExists:
                    found = self.store.get_folder(self.mailbox.id, name)
            target = _Target(found, name)
            uids = [e.uid for e in self.store.index(found.id)]
            for start in range(0, len(uids), 500):
                for _, raw in self.store.iter_bodies(found.id, uids[start:start + 500]):
                    target.present[digest(raw)] += 1
            return target
        except InvalidName as exc:
            return _Target(None, name, f"the folder name {name!r} is not valid here ({exc})")
        except StoreUnavailable as exc:
            raise Stopped(describe_store_error(exc)) from None
        except StoreError as exc:  # e.g. the box was deleted meanwhile
            return _Target(None, name, f"{name}: {describe_store_error(exc)}")

    # -- messages

    def refuse(self, where: str, why: str) -> None:
        self.refused += 1
        self.progress.note(f"mssctl: refused: {where}: {why}", self.errors)

    def take(self, item: SourceMessage | SourceProblem) -> None:
        if isinstance(item, SourceProblem):
            self.refuse(item.where, item.why)
            self.progress.step()
            return
        target = self._target(item.folder)
        if target.folder is None:
            self.refuse(item.where, f"{target.why}; not imported")
            self.progress.step()
            return
        key = digest(item.raw)
        if target.present[key] > 0:
            target.present[key] -= 1
            self.skipped += 1
            self.progress.step()
            return
        problem = message_problem(item.raw)
        if problem is None and len(item.raw) > self.max_size:
            problem = (f"{len(item.raw)} bytes, larger than limits.message_size "
                       f"({self.max_size})")
        if problem is not None:
            self.refuse(item.where, problem)
            self.progress.step()
            return
        from storage.interface import AppendItem

        try:
            prepared = self.store.prepare(item.raw)
        except Exception as exc:  # noqa: BLE001 - a message we cannot parse is refused, not fatal
            self.refuse(item.where, f"cannot be parsed ({type(exc).__name__})")
            self.progress.step()
            return
        if self._batch_target is not target:
            self.flush()
            self._batch_target = target
        flags = tuple(sorted(f for f in item.flags if f != "\\Recent"))
        self._batch.append(_Pending(AppendItem(prepared, flags, item.internal_date),
                                    item.where, key))
        self._batch_octets += len(item.raw)
        if len(self._batch) >= self.batch_messages or self._batch_octets >= BATCH_OCTETS:
            self.flush()

    def flush(self) -> None:
        """Commits the pending batch (one transaction)."""
        from storage.interface import QuotaExceeded, StoreError, StoreUnavailable

        batch, target = self._batch, self._batch_target
        self._batch, self._batch_octets = [], 0
        if not batch or target is None or target.folder is None:
            return
        folder_id = target.folder.id
        try:
            self.store.append_many(folder_id, [p.item for p in batch], recent=False,
                                   seen_account=self.seen_account)
        except StoreUnavailable as exc:
            raise Stopped(describe_store_error(exc)) from None
        except QuotaExceeded as exc:
            for p in batch:
                self.refuse(p.where, f"{target.name}: {describe_store_error(exc)}")
            self.progress.step(len(batch))
            return
        except StoreError:
            # One of them was refused by the database: find which, one at a time.
            for p in batch:
                self._one(target, p)
            return
        self.imported += len(batch)
        self.progress.step(len(batch))

    def _one(self, target: _Target, p: _Pending) -> None:
        from storage.interface import StoreError, StoreUnavailable

        assert target.folder is not None
        try:
            self.store.append_many(target.folder.id, [p.item], recent=False,
                                   seen_account=self.seen_account)
        except StoreUnavailable as exc:
            raise Stopped(describe_store_error(exc)) from None
        except StoreError as exc:
            self.refuse(p.where, f"{target.name}: {describe_store_error(exc)}")
        else:
            self.imported += 1
        self.progress.step()

    def summary(self) -> str:
        elapsed = self.progress.elapsed()
        rate = self.imported / elapsed if elapsed > 0 else 0.0
        return (f"import into {self.mailbox.address}: imported {self.imported}, skipped "
                f"{self.skipped} (already there), refused {self.refused} "
                f"({elapsed:.1f} s, {rate:.0f} messages/s)")


# ---------------------------------------------------------------- sources


@dataclass
class Source:
    label: str  # for the audit and the messages
    kind: str
    total: int | None
    items: Iterator[SourceMessage | SourceProblem]
    close: Any = None


def _maildir_source(path: Path) -> Source:
    if not (path / "cur").is_dir() and not (path / "new").is_dir():
        raise CliError(f"{path} is not a Maildir (no cur/ or new/)", EXIT_USAGE)
    try:
        total = count_maildir(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return Source(str(path), "maildir", total, read_maildir(path))


def _mbox_items(path: Path) -> Iterator[SourceMessage | SourceProblem]:
    for folder, file in mbox_files(path):
        if folder is None:
            yield SourceProblem(str(file), f"the folder name {file.stem!r} is not valid here")
            continue
        try:
            yield from read_mbox(file, folder)
        except OSError as exc:
            yield SourceProblem(str(file), f"unreadable: {exc.strerror or exc}", folder)


def _mbox_source(path: Path) -> Source:
    if not path.exists():
        raise CliError(f"{path}: no such file or directory", EXIT_USAGE)
    total = 0
    for _, file in mbox_files(path):
        try:
            total += count_mbox(file)
        except OSError:
            pass  # reported when read
    return Source(str(path), "mbox", total, _mbox_items(path))


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        try:
            text: str = args.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {args.password_file}: {exc.strerror or exc}",
                           EXIT_USAGE) from None
        return text.rstrip("\r\n")
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {args.user} on {args.imap}: ")
    return sys.stdin.readline().rstrip("\r\n")


def _imap_source(args: argparse.Namespace, max_size: int) -> Source:
    import ssl

    from mssctl.imapsource import RemoteAccount, RemoteError, RemoteRefused

    host, _, port_text = args.imap.rpartition(":") if ":" in args.imap else (args.imap, "", "")
    if not port_text.isdigit():
        raise CliError(f"--imap: expected HOST[:PORT], got {args.imap!r}", EXIT_USAGE)
    port = int(port_text) if port_text else (143 if args.starttls else 993)
    if not args.user:
        raise CliError("--imap needs --user", EXIT_USAGE)
    try:
        context = ssl.create_default_context(cafile=str(args.ca_file) if args.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"--ca-file: {exc}", EXIT_USAGE) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        account = RemoteAccount(host or "localhost", port, args.user, _password(args), context,
                                starttls=args.starttls)
        folders = account.folders()
    except RemoteError as exc:
        raise CliError(str(exc)) from None

    def items() -> Iterator[SourceMessage | SourceProblem]:
        for folder in folders:
            if folder.folder is None:
                yield SourceProblem(f"{account.label}/{folder.name}", folder.why)
                continue
            try:
                sized = account.uids(folder)
            except RemoteRefused as exc:
                yield SourceProblem(f"{account.label}/{folder.name}", str(exc), folder.folder)
                continue
            except RemoteError as exc:
                raise Stopped(str(exc)) from None
            try:
                yield from account.messages(folder, sized, max_size)
            except RemoteError as exc:
                raise Stopped(str(exc)) from None

    total = account.count([f for f in folders if f.folder is not None])
    return Source(account.label, "imap", total, items(), account.logout)


# ---------------------------------------------------------------- commands


def register(sub: Any) -> None:
    p = sub.add_parser("import", help="bring mail into a box (Maildir, mbox, remote IMAP)",
                       description=IMPORT_HELP)
    p.add_argument("--mailbox", required=True, metavar="ADDR", help="the destination box")
    p.add_argument("--folder", metavar="PREFIX", default="",
                   help="put the source's folders under this folder (its root/INBOX into it)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--maildir", type=Path, metavar="DIR", help="a Maildir++ tree")
    src.add_argument("--mbox", type=Path, metavar="PATH",
                     help="an mbox file (into --folder, else INBOX), or a directory of "
                          "<folder>.mbox files as `export --format mbox` writes")
    src.add_argument("--imap", metavar="HOST[:PORT]",
                     help="a remote IMAP account over TLS (IMAPS, port 993 by default)")
    p.add_argument("--user", help="--imap: the login")
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help="--imap: a file holding the password (else a prompt, or a line of "
                        "stdin when it is not a terminal)")
    p.add_argument("--ca-file", type=Path, metavar="FILE",
                   help="--imap: CA certificates to trust (default: the system's)")
    p.add_argument("--starttls", action="store_true",
                   help="--imap: plain IMAP then STARTTLS (port 143 by default) instead of IMAPS")
    p.add_argument("--batch", type=int, default=BATCH_MESSAGES, metavar="N",
                   help=f"messages per committed transaction (default {BATCH_MESSAGES})")
    add_config_option(p)
    p.set_defaults(func=cmd_import)

    e = sub.add_parser(
        "export", help="write a box's mail to Maildir or mbox",
        description="Writes a box (all its folders, or --folder) to DEST, a new or empty "
        "directory: a Maildir++ tree (INBOX the root, Archives/2024 as .Archives.2024), or "
        "one mboxrd file per folder (<Maildir++ name>.mbox, INBOX.mbox for INBOX). Flags "
        "and INTERNALDATE are kept (Maildir: the :2, suffix and the file's mtime; mbox: "
        "Status/X-Status/X-Keywords and the From line). With --folder, that folder alone "
        "is written as the root (Maildir) or as DEST/INBOX.mbox. `mssctl import` reads "
        "both back.")
    e.add_argument("dest", metavar="DEST", type=Path, help="a new or empty directory")
    e.add_argument("--mailbox", required=True, metavar="ADDR")
    e.add_argument("--folder", metavar="NAME", help="this folder only")
    e.add_argument("--format", choices=("maildir", "mbox"), default="maildir")
    add_config_option(e)
    e.set_defaults(func=cmd_export)


def _prefix(text: str) -> tuple[str, ...]:
    text = text.strip(SEPARATOR)
    if not text:
        return ()
    if text.upper() == "INBOX":
        return ("INBOX",)
    parts = tuple(text.split(SEPARATOR))
    if not all(p.strip() for p in parts):
        raise CliError(f"--folder: {text!r} has an empty level", EXIT_USAGE)
    return parts


def cmd_import(args: argparse.Namespace) -> int:
    settings = load(args)
    prefix = _prefix(args.folder)
    if args.batch < 1:
        raise CliError("--batch must be at least 1", EXIT_USAGE)
    with opened_store(settings) as store:
        with store_errors(args.mailbox):
            mailbox = store.get_mailbox(args.mailbox)
        if args.maildir is not None:
            source = _maildir_source(args.maildir)
        elif args.mbox is not None:
            source = _mbox_source(args.mbox)
        else:
            source = _imap_source(args, settings.limits.message_size)
        progress = Progress(sys.stdout, f"importing into {mailbox.address}", source.total)
        importer = Importer(store, mailbox, prefix, progress, sys.stderr,
                            max_size=settings.limits.message_size, batch_messages=args.batch)
        stopped: str | None = None
        try:
            with admin_change(settings, "import", mailbox.address, store=store,
                              source=source.label, format=source.kind,
                              folder=args.folder or None) as change:
                try:
                    for item in source.items:
                        importer.take(item)
                    importer.flush()
                except Stopped as exc:
                    stopped = str(exc)
                    try:  # the source went away: what was read is still committed
                        importer.flush()
                    except Stopped:
                        pass
                finally:
                    if source.close is not None:
                        source.close()
                    change.details.update(imported=importer.imported, skipped=importer.skipped,
                                          refused=importer.refused,
                                          folders_created=importer.folders_created or None)
                    progress.clear()
                    print(importer.summary(), flush=True)
                if stopped is not None:
                    raise CliError(f"import stopped: {stopped}; the {importer.imported} "
                                   "message(s) counted as imported are committed: run the "
                                   "same command again to resume")
        except KeyboardInterrupt:
            progress.clear()
            raise CliError(f"interrupted; the {importer.imported} message(s) counted as "
                           "imported are committed: run the same command again to resume",
                           130) from None
    return EXIT_FAILURE if importer.refused else EXIT_OK


def _export_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise CliError(f"{dest} exists and is not a directory", EXIT_USAGE)
    if dest.is_dir() and any(dest.iterdir()):
        raise CliError(f"{dest} is not empty: give a new or empty directory", EXIT_USAGE)
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {dest}: {exc.strerror or exc}") from None


def _components(name: str) -> tuple[str, ...]:
    return () if name.upper() == "INBOX" else tuple(name.split(SEPARATOR))


def _export_folder(store: MessageStore, folder: Folder, path: tuple[str, ...], fmt: str,
                   dest: Path, writer: MaildirWriter, seen_account: int | None,
                   progress: Progress) -> int:
    entries = {e.uid: e for e in store.index(folder.id, seen_account=seen_account)}
    uids = sorted(entries)
    out = None
    if fmt == "mbox":
        out = (dest / mbox_filename(path)).open("xb")
    try:
        for start in range(0, len(uids), 200):
            for uid, raw in store.iter_bodies(folder.id, uids[start:start + 200]):
                entry = entries[uid]
                date = entry.internal_date.astimezone(UTC)
                if out is not None:
                    out.write(mbox_entry(raw, entry.flags, date))
                else:
                    writer.write(path, raw, entry.flags, date)
                progress.step()
    finally:
        if out is not None:
            out.close()
    return len(uids)


def cmd_export(args: argparse.Namespace) -> int:
    settings = load(args)
    dest: Path = args.dest
    with opened_store(settings) as store:
        with store_errors(args.mailbox):
            mailbox = store.get_mailbox(args.mailbox)
            folders = ([store.get_folder(mailbox.id, args.folder)] if args.folder
                       else store.list_folders(mailbox.id))
        _export_dest(dest)
        seen = mailbox.owner_account_id if mailbox.private_seen else None
        total = sum(store.folder_status(f.id).messages for f in folders)
        progress = Progress(sys.stdout, f"exporting {mailbox.address}", total)
        writer = MaildirWriter(dest)
        exported = 0
        with admin_change(settings, "export", mailbox.address, store=store, dest=str(dest),
                          format=args.format, folder=args.folder) as change:
            try:
                for f in folders:
                    path = () if args.folder else _components(f.name)
                    if args.format == "maildir":
                        writer.write_folder(path)
                    exported += _export_folder(store, f, path, args.format, dest, writer, seen,
                                               progress)
            except OSError as exc:
                raise CliError(f"cannot write into {dest}: {exc.strerror or exc}; "
                               f"{progress.done} message(s) written") from None
            finally:
                change.details.update(folders=len(folders), messages=progress.done)
                progress.clear()
        print(f"export of {mailbox.address}: {exported} message(s) from {len(folders)} "
              f"folder(s) to {dest} ({args.format}, {progress.elapsed():.1f} s)")
    return EXIT_OK
