"""CATENATE (RFC 4469): a message composed on the server from TEXT literals
and IMAP URLs (RFC 5092) to messages or parts the user may read, checked as
FETCH checks them (the r right; "not permitted" answers like "not found"),
audited as a FETCH of the message read; NO [BADURL url], NO [TOOBIG];
combined with MULTIAPPEND (all or nothing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import (
    CARDIO,
    SECRETARY,
    SECRETARY2,
    ImapClient,
    ImapEnv,
    add_user,
    deliver,
    make_env,
    message,
    populate,
)

from conf.settings import LimitSettings
from storage.interface import MailboxType

BOUNDARY = b"--------------030308070208000400050907"
DRAFT = (
    b"From: Dr Martin <dr.martin@hopital.test>\r\n"
    b"To: <secretaire@hopital.test>\r\n"
    b"Subject: Compte rendu\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="' + BOUNDARY[2:] + b'"\r\n'
    b"\r\n"
    b"--" + BOUNDARY[2:] + b"\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Voir le compte rendu joint.\r\n"
    b"--" + BOUNDARY[2:] + b"\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--" + BOUNDARY[2:] + b"--\r\n"
)
HEADER, _, BODY = DRAFT.partition(b"\r\n\r\n")
HEADER += b"\r\n\r\n"


@pytest.fixture
def env(tmp_path: Path, store: Any) -> ImapEnv:
    populate(store)
    return make_env(tmp_path, store)


def drafts(env: ImapEnv, c: ImapClient) -> tuple[int, int, int]:
    """Puts DRAFT (UID a) and a plain message (UID b) into Drafts; (uidvalidity, a, b)."""
    out = c.cmd(b"d1 APPEND Drafts {%d+}\r\n%s {%d+}\r\n%s" % (
        len(DRAFT), DRAFT, len(PLAIN), PLAIN))
    m = re.search(rb"APPENDUID (\d+) (\d+):(\d+)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


PLAIN = message("plain", "Texte du deuxieme message.\r\n")


def stored(env: ImapEnv, uid: int, address: str = SECRETARY, folder: str = "Drafts") -> bytes:
    f = env.store.get_folder(env.store.get_mailbox(address).id, folder)
    return env.store.message_body(f.id, uid)


def count(env: ImapEnv, address: str = SECRETARY, folder: str = "Drafts") -> int:
    f = env.store.get_folder(env.store.get_mailbox(address).id, folder)
    return env.store.folder_status(f.id).messages


def test_rfc4469_example_forwarding_parts_of_a_draft(env: ImapEnv) -> None:
    c = env.login()
    assert b" CATENATE" in c.ok("CAPABILITY")
    v, a, b = drafts(env, c)
    text1 = b"\r\n--" + BOUNDARY[2:] + b"\r\n"
    text2 = b"\r\n--" + BOUNDARY[2:] + b"\r\n"
    text3 = b"\r\n--" + BOUNDARY[2:] + b"--\r\n"
    pre = f"/Drafts;UIDVALIDITY={v}/;UID={a}".encode()
    parts = [
        b'A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL "%s/;section=HEADER"'
        b" TEXT {%d}\r\n" % (pre, len(text1)),
        text1 + b' URL "%s/;section=1.MIME" URL "%s/;section=1" TEXT {%d}\r\n'
        % (pre, pre, len(text2)),
        text2 + b' URL "/Drafts;UIDVALIDITY=%d/;UID=%d" TEXT {%d}\r\n' % (v, b, len(text3)),
        text3 + b")\r\n",
    ]
    for part in parts[:-1]:
        assert c.send(part) == b"+ Ready for literal data\r\n"
    out = c.send(parts[-1])
    m = re.fullmatch(rb"A003 OK \[APPENDUID %d (\d+)\] APPEND completed\r\n" % v, out)
    assert m, out
    part1_mime = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    expected = (HEADER + text1 + part1_mime + b"Voir le compte rendu joint." + text2
                + PLAIN + text3)
    assert stored(env, int(m.group(1))) == expected
    c.ok("EXAMINE Drafts")
    flags = c.ok(f"UID FETCH {int(m.group(1))} FLAGS")
    assert b"\\Seen" in flags and b"\\Draft" in flags and b"$MDNSent" in flags


def test_a_url_read_is_audited_as_a_fetch_of_that_message(env: ImapEnv) -> None:
    c = env.login()
    v, a, _ = drafts(env, c)
    out = c.cmd(b'a1 APPEND INBOX CATENATE (URL "/Drafts/;UID=%d/;SECTION=1" TEXT {2+}\r\nok)' % a)
    assert b"a1 OK [APPENDUID" in out, out
    fetches = [e for e in env.audit.events if e.action == "fetch" and e.result == "ok"]
    assert len(fetches) == 1
    e = fetches[0]
    assert e.actor == SECRETARY and e.target == f"{SECRETARY}/Drafts" and e.result == "ok"
    assert e.details["uids"] == str(a) and e.details["via"] == "catenate"
    assert e.details["to"] == f"{SECRETARY}/INBOX"
    assert "Voir" not in repr(e)  # never the content
    # The access itself was decided (and recorded) as a FETCH's: the r right.
    reads = [x for x in env.audit.events if x.action == "fetch" and x.result == "allow"]
    assert [(x.target, x.details["right"]) for x in reads] == [(f"{SECRETARY}/Drafts", "r")]


BADURL_TEXT = b"No such message"


@pytest.mark.parametrize("url", [
    "/Drafts/;UID=999",  # no such message
    "/Drafts;UIDVALIDITY=1/;UID={a}",  # another UIDVALIDITY
    "/Drafts/;UID={a}/;SECTION=7",  # no such part
    "/Nope/;UID=1",  # no such mailbox
    "/Shared/pneumologie@hopital.test/INBOX/;UID=1",  # a mailbox not granted
    "/Other Users/autre@hopital.test/INBOX/;UID=1".replace(" ", "%20"),
])
def test_badurl_for_missing_and_forbidden_look_alike(env: ImapEnv, store: Any, url: str) -> None:
    other = add_user(store, "autre@hopital.test")
    deliver(store, "autre@hopital.test", message("private"))
    pneumo = store.add_mailbox("pneumologie@hopital.test", MailboxType.ORG)
    deliver(store, pneumo.address, message("pneumo"))
    assert other is not None
    c = env.login()
    _, a, _ = drafts(env, c)
    before = count(env, folder="INBOX")
    url = url.format(a=a)
    out = c.cmd(f'a1 APPEND INBOX CATENATE (TEXT {{2+}}\r\nhi URL "{url}")')
    assert out == f"a1 NO [BADURL {url}] No such message\r\n".encode(), out
    assert count(env, folder="INBOX") == before


@pytest.mark.parametrize(("url", "text"), [
    ("imap://other.example/Drafts/;UID=1", "URL names another server"),
    ("imap://secretaire@hopital.test@mx.hopital.test/Drafts/;UID=1", None),
    ("imap://accueil@hopital.test@mx.hopital.test/Drafts/;UID=1", "URL names another user"),
    ("/Drafts/;UID=1/;URLAUTH=anonymous:internal:0123456789abcdef", "URLAUTH is not supported"),
    ("/Drafts", "URL does not name a message"),
    ("nonsense", "Not an IMAP URL"),
])
def test_urls_this_server_does_not_serve(env: ImapEnv, url: str, text: str | None) -> None:
    c = env.login()
    drafts(env, c)
    out = c.cmd(f'a1 APPEND INBOX CATENATE (URL "{url}")')
    if text is None:  # the user's own login and this server's name: served
        assert out.startswith(b"a1 OK [APPENDUID"), out
        return
    assert out == f"a1 NO [BADURL {url}] {text}\r\n".encode(), out


def test_a_url_to_a_shared_box_needs_the_read_right(env: ImapEnv, store: Any) -> None:
    uid = deliver(store, CARDIO, message("patient", "Bilan cardiaque\r\n"))
    c = env.login(SECRETARY2)
    url = f"/Shared/{CARDIO}/INBOX/;UID={uid}/;SECTION=TEXT"
    out = c.cmd(f'a1 APPEND Drafts CATENATE (URL "{url}")')
    assert out.startswith(b"a1 OK [APPENDUID"), out
    assert count(env, SECRETARY2) == 1
    # The grant loses "r" (still "l": the box is visible): the URL is refused
    # exactly as for a message that does not exist.
    store.set_grant(store.get_account(SECRETARY2).id, store.get_mailbox(CARDIO).id, "l")
    out = c.cmd(f'a2 APPEND Drafts CATENATE (URL "{url}")')
    assert out == f"a2 NO [BADURL {url}] No such message\r\n".encode()
    assert count(env, SECRETARY2) == 1


def test_composed_message_over_appendlimit_is_toobig(tmp_path: Path, store: Any) -> None:
    populate(store)
    env = make_env(tmp_path, store, limits=LimitSettings(message_size=1024))
    c = env.login()
    _, a, _ = drafts(env, c)
    big = b"x" * 900
    out = c.cmd(b'a1 APPEND INBOX CATENATE (URL "/Drafts/;UID=%d" TEXT {%d+}\r\n%s)' % (
        a, len(big), big))
    assert out == b"a1 NO [TOOBIG] Composed message too big\r\n"
    assert count(env, folder="INBOX") == 0


def test_with_multiappend_all_or_nothing(env: ImapEnv) -> None:
    c = env.login()
    _, a, b = drafts(env, c)
    before = count(env, folder="INBOX")
    good = b'CATENATE (URL "/Drafts/;UID=%d" TEXT {2+}\r\n--)' % a
    # A bad URL in the second message: the first is not stored either.
    out = c.cmd(b"a1 APPEND INBOX %s {%d+}\r\n%s CATENATE (URL \"/Drafts/;UID=999\")" % (
        good, len(PLAIN), PLAIN))
    assert out == b"a1 NO [BADURL /Drafts/;UID=999] No such message\r\n", out
    assert count(env, folder="INBOX") == before
    out = c.cmd(b"a2 APPEND INBOX %s (\\Flagged) {%d+}\r\n%s CATENATE (URL \"/Drafts/;UID=%d\")"
                % (good, len(PLAIN), PLAIN, b))
    m = re.fullmatch(rb"a2 OK \[APPENDUID \d+ (\d+):(\d+)\] APPEND completed\r\n", out)
    assert m, out
    first, last = int(m.group(1)), int(m.group(2))
    assert last == first + 2
    assert stored(env, first, folder="INBOX") == DRAFT + b"--"
    assert stored(env, first + 1, folder="INBOX") == PLAIN
    assert stored(env, last, folder="INBOX") == PLAIN


def test_empty_composition_and_partial(env: ImapEnv) -> None:
    c = env.login()
    _, a, _ = drafts(env, c)
    out = c.cmd(b'a1 APPEND INBOX CATENATE (URL "/Drafts/;UID=%d/;PARTIAL=5000.10")' % a)
    assert out == b"a1 NO [CANNOT] Cannot save a zero-byte message\r\n"
    out = c.cmd(b'a2 APPEND INBOX CATENATE (URL "/Drafts/;UID=%d/;PARTIAL=6.8")' % a)
    m = re.search(rb"APPENDUID \d+ (\d+)", out)
    assert m, out
    assert stored(env, int(m.group(1)), folder="INBOX") == DRAFT[6:14]


def test_badurl_echo_never_breaks_the_response(env: ImapEnv) -> None:
    c = env.login()
    out = c.cmd(b'a1 APPEND INBOX CATENATE (URL {12+}\r\n/a]b\r\n;UID=1)')
    assert out == b"a1 NO [BADURL /a%5Db%0D%0A;UID=1] Invalid characters in URL\r\n"
    out = c.cmd('a2 APPEND INBOX CATENATE (URL "/\u00e9t\u00e9 x/;UID=1")')
    assert out == b"a2 NO [BADURL /%C3%A9t%C3%A9%20x/;UID=1] Invalid characters in URL\r\n"


def test_url_reads_are_bounded_per_command(tmp_path: Path, store: Any) -> None:
    """Each URL decrypts its whole message: one APPEND may not make the
    server read more than imap_append_octets through URLs, PARTIAL or not."""
    populate(store)
    env = make_env(tmp_path, store, limits=LimitSettings(imap_append_octets=4096))
    c = env.login()
    _, a, _ = drafts(env, c)
    urls = b" ".join(b'URL "/Drafts/;UID=%d/;PARTIAL=0.1"' % a for _ in range(4096 // len(DRAFT)))
    out = c.cmd(b"a1 APPEND INBOX CATENATE (%s)" % urls)
    assert out.startswith(b"a1 OK [APPENDUID"), out
    urls += b' URL "/Drafts/;UID=%d/;PARTIAL=0.1"' % a
    out = c.cmd(b"a2 APPEND INBOX CATENATE (%s)" % urls)
    assert out == b"a2 NO [LIMIT] Too much data in one APPEND\r\n"
    assert count(env, folder="INBOX") == 1


def test_urls_to_one_folder_are_one_fetch_event(env: ImapEnv) -> None:
    c = env.login()
    _, a, b = drafts(env, c)
    urls = b'URL "/Drafts/;UID=%d/;SECTION=HEADER" URL "/Drafts/;UID=%d/;SECTION=1" ' \
           b'URL "/Drafts/;UID=%d"' % (a, a, b)
    out = c.cmd(b"a1 APPEND INBOX CATENATE (%s) CATENATE (%s)" % (urls, urls))
    assert out.startswith(b"a1 OK [APPENDUID"), out
    (event,) = [e for e in env.audit.events if e.action == "fetch" and e.result == "ok"]
    assert event.target == f"{SECRETARY}/Drafts" and event.details["uids"] == f"{a}:{b}"
    # drafts() stored two, then this APPEND two more.
    _, stored_event = [e for e in env.audit.events if e.action == "append" and e.result == "ok"]
    assert stored_event.target == f"{SECRETARY}/INBOX"
    assert stored_event.details["messages"] == 2 and stored_event.details["catenate"] is True
