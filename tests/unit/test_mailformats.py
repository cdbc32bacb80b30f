"""Maildir and mbox reading and writing (mssctl/mailformats.py), the remote
IMAP LIST parsing (mssctl/imapsource.py) and the progress line: pure tables."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mssctl.imapsource import map_folder, parse_list
from mssctl.mailformats import (
    SourceMessage,
    SourceProblem,
    crlf,
    from_line_date,
    maildir_date,
    maildir_dirname,
    maildir_flags,
    maildir_folder,
    mbox_entry,
    read_mbox,
)
from mssctl.migrate import Progress


@pytest.mark.parametrize(("name", "flags"), [
    ("1.M1P1.host:2,S", {"\\Seen"}),
    ("1.M1P1.host,S=12:2,DFRST", {"\\Draft", "\\Flagged", "\\Answered", "\\Seen", "\\Deleted"}),
    ("1.M1P1.host:2,", set()),
    ("1.M1P1.host", set()),  # new/: no info
    ("1.M1P1.host:2,SXa", {"\\Seen"}),  # unknown letters and keywords without a table
    ("1.M1P1.host:1,S", set()),  # experimental info, not flags
])
def test_maildir_flags(name: str, flags: set[str]) -> None:
    assert maildir_flags(name) == frozenset(flags)


def test_maildir_keywords_from_the_table() -> None:
    assert maildir_flags("1.x:2,Sab", {"a": "$Forwarded", "b": "NonJunk"}) == frozenset(
        {"\\Seen", "$Forwarded", "NonJunk"})


def test_maildir_date_prefers_mtime_then_the_name() -> None:
    assert maildir_date("1700000000.M1.h", 1600000000.7) == datetime.fromtimestamp(
        1600000000, UTC)
    assert maildir_date("1700000000.M1.h", None) == datetime.fromtimestamp(1700000000, UTC)
    assert maildir_date("weird", None) is None


@pytest.mark.parametrize(("dirname", "folder"), [
    (".Sent", ("Sent",)),
    (".Archives.2024", ("Archives", "2024")),
    (".Dossiers.&AMk-t&AOk-", ("Dossiers", "Été")),
    (".A%2EB.c%25", ("A.B", "c%")),
    (".Dossiers.Été", ("Dossiers", "Été")),  # Dovecot's UTF-8 layout
])
def test_maildir_folder_names_round_trip(dirname: str, folder: tuple[str, ...]) -> None:
    assert maildir_folder(dirname) == folder
    assert maildir_folder(maildir_dirname(folder)) == folder


@pytest.mark.parametrize("dirname", [".a..b", ".&bad", ".x."])
def test_maildir_folder_names_refused(dirname: str) -> None:
    with pytest.raises(ValueError):
        maildir_folder(dirname)


@pytest.mark.parametrize(("line", "date"), [
    (b"From a@b Tue Mar  5 09:15:02 2024", datetime(2024, 3, 5, 9, 15, 2, tzinfo=UTC)),
    (b"From a@b Tue Mar 05 09:15 2024", datetime(2024, 3, 5, 9, 15, 0, tzinfo=UTC)),
    (b"From MAILER-DAEMON Thu Feb 29 00:00:00 2024 +0100",
     datetime(2024, 2, 29, tzinfo=UTC)),
    (b"From a@b Tue Mar  5 09:15:02 CET 2024", datetime(2024, 3, 5, 9, 15, 2, tzinfo=UTC)),
    (b"From a@b Tue Foo  5 09:15:02 2024", None),
    (b"From a@b Tue Feb 30 09:15:02 2024", None),
    (b"From a@b", None),
])
def test_from_line_date(line: bytes, date: datetime | None) -> None:
    assert from_line_date(line) == date


def test_crlf() -> None:
    assert crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert crlf(b"a\r\nb\r\n") == b"a\r\nb\r\n"
    assert crlf(b"no newline") == b"no newline"


@pytest.mark.parametrize("body", [
    b"plain\r\n",
    b"From the start\r\n>From quoted\r\n>>From twice\r\n",
    b"\r\nFrom \r\n\r\nFrom x Mon Jan  1 00:00:00 2024\r\n",  # looks like a separator
    b"Status: RO\r\n",  # in the body: kept
])
def test_mbox_entry_reads_back(tmp_path: Path, body: bytes) -> None:
    raw = b"From: a@b\r\nSubject: s\r\n\r\n" + body
    date = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    path = tmp_path / "f.mbox"
    path.write_bytes(mbox_entry(raw, {"\\Seen", "\\Flagged", "$Label1"}, date) * 2)
    got = list(read_mbox(path, ("X",)))
    assert len(got) == 2
    for item in got:
        assert isinstance(item, SourceMessage)
        assert (item.raw, item.flags, item.internal_date, item.folder) == (
            raw, frozenset({"\\Seen", "\\Flagged", "$Label1"}), date, ("X",))


def test_mbox_from_line_without_a_date_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f.mbox"
    path.write_bytes(b"From nobody\nFrom: a@b\n\nx\n\nFrom a@b Tue Mar  5 09:15:02 2024\n"
                     b"From: c@d\n\ny\n")
    first, second = read_mbox(path)
    assert isinstance(first, SourceProblem) and first.why == "the From line has no date"
    assert first.where == f"{path} offset 0"
    assert isinstance(second, SourceMessage) and second.raw == b"From: c@d\r\n\r\ny\r\n"


def test_list_parsing_and_folder_mapping() -> None:
    data: list[object] = [
        b'(\\HasNoChildren) "." INBOX',
        b'(\\HasChildren) "." "INBOX.Archives"',
        b'(\\HasNoChildren) "." "INBOX.Archives.2024"',
        b'(\\Noselect) "." "Shared"',
        (b'(\\HasNoChildren) "." {8}', b"Caf&AOk-"),
        b'(\\HasNoChildren) "." "a/b"',
        b'(\\HasNoChildren) "." "x..y"',
    ]
    entries, sep = parse_list(data)
    assert sep == b"."
    names = [name for _, _, name in entries]
    assert names == ["INBOX", "INBOX.Archives", "INBOX.Archives.2024", "Shared", "Café", "a/b",
                     "x..y"]
    assert [map_folder(n, sep)[0] for n in names] == [
        (), ("Archives",), ("Archives", "2024"), ("Shared",), ("Café",), None, None]
    assert "holds '/'" in map_folder("a/b", sep)[1]
    assert map_folder("Sent/2024", b"/")[0] == ("Sent", "2024")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal_only() -> None:
    tty = _Tty()
    progress = Progress(tty, "importing", 10)
    progress.step(4)
    text = tty.getvalue()
    assert text.startswith("\rimporting: 4/10 messages, ") and "ETA" in text
    progress.clear()
    assert tty.getvalue().endswith("\r")
    pipe = io.StringIO()
    quiet = Progress(pipe, "importing", 10)
    quiet.step(10)
    quiet.clear()
    assert pipe.getvalue() == ""
    blobs = _Tty()
    Progress(blobs, "re-encrypted", unit="blobs").step(500)
    assert blobs.getvalue().startswith("\rre-encrypted: 500 blobs, ")


def test_mbox_with_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "f.mbox"
    path.write_bytes(b"From a@b Tue Mar  5 09:15:02 2024\r\nFrom: a@b\r\nStatus: RO\r\n\r\n"
                     b"one\r\nStatus: body line\r\n\r\n"
                     b"From a@b Tue Mar  5 09:15:03 2024\r\nFrom: c@d\r\n\r\ntwo\r\n")
    got = [(m.raw, m.flags) for m in read_mbox(path) if isinstance(m, SourceMessage)]
    assert got == [(b"From: a@b\r\n\r\none\r\nStatus: body line\r\n", frozenset({"\\Seen"})),
                   (b"From: c@d\r\n\r\ntwo\r\n", frozenset())]
