"""Storage errors and policy denials mapped to IMAP responses, once.

Handlers raise (or let through) `storage.interface.StoreError` subclasses and
`ImapError`; `to_response` turns any exception into the tagged status, the
response code and a fixed text. Nothing here ever echoes `str(exc)` of an
unexpected error to the client: those get ``NO [SERVERBUG]`` and a correlation
id that is written to the log with the traceback.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from imapd import responses
from imapd.responses import ResponseCode
from storage.interface import (
    AlreadyExists,
    FolderNotEmpty,
    InvalidName,
    NotFound,
    QuotaExceeded,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """A tagged completion: status OK/NO/BAD, optional response code, text."""

    status: str
    code: ResponseCode | None  # from the catalogue in `imapd.responses`
    text: str

    def line(self, tag: str) -> bytes:
        head = f"{tag} {self.status} ".encode()
        if self.code is not None:
            head += self.code.render() + b" "
        return head + self.text.encode() + b"\r\n"


class ImapError(Exception):
    """Raised by handlers to finish a command with NO or BAD."""

    def __init__(self, status: str, code: ResponseCode | None, text: str) -> None:
        super().__init__(text)
        self.reply = Reply(status, code, text)


def no(text: str, code: ResponseCode | None = None) -> ImapError:
    return ImapError("NO", code, text)


def bad(text: str, code: ResponseCode | None = None) -> ImapError:
    return ImapError("BAD", code, text)


# The one answer for "does not exist" and "you may not see it" (STYLE rule 5):
# same code, same text, so nobody can probe which mailboxes exist.
NONEXISTENT = Reply("NO", responses.NONEXISTENT, "No such mailbox")


# Mailbox commands (SELECT, CREATE, DELETE, RENAME, STATUS, LIST).
QRESYNC_NOT_ENABLED = Reply("BAD", None, "QRESYNC is not enabled")
EMPTY_NAME = Reply("BAD", None, "Empty mailbox name")
UNSUPPORTED_USE = Reply("NO", responses.USEATTR, "Unsupported special-use attribute")
ALREADY_EXISTS = Reply("NO", responses.ALREADYEXISTS, "Mailbox already exists")
DELETE_HASCHILDREN = Reply("NO", responses.HASCHILDREN, "Name has inferior hierarchical names")
INBOX_NOT_DELETED = Reply("NO", responses.CANNOT, "INBOX cannot be deleted")
RENAME_ACROSS = Reply("NO", responses.CANNOT, "Cannot move a folder to another mailbox")
RENAME_REFUSED = Reply("NO", responses.CANNOT, "Cannot rename to that name")
STATUS_NO_ITEM = Reply("BAD", None, "STATUS needs at least one item")
RECURSIVEMATCH_ALONE = Reply("BAD", None, "RECURSIVEMATCH needs another selection option")
# Message commands on a mailbox selected read-only (EXAMINE, or no right to write).
READ_ONLY = Reply("NO", responses.READ_ONLY, "Mailbox is read-only")
# SETACL/DELETEACL refusals after the access check (`Policy.set_rights` reasons).
ACL_UNKNOWN_IDENTIFIER = Reply("NO", responses.CANNOT, "Unknown identifier")
ACL_OWNER_FIXED = Reply("NO", responses.CANNOT, "The owner's rights cannot be changed")
ACL_UNKNOWN_RIGHT = Reply("BAD", None, "Unknown right")
ACL_MAILBOX_RIGHTS_FIXED = Reply(
    "NO", responses.CANNOT, "Rights granted on the whole mailbox cannot be removed on one folder")
# CREATE or RENAME to a name that is an astring but not modified UTF-7
# (RFC 3501 5.1.3): well-formed, so NO, not BAD (Dovecot's answer too).
NOT_MUTF7 = Reply("NO", responses.CANNOT, "Mailbox name is not valid modified UTF-7")


# NOTIFY (RFC 5465 3.1, 5.8).
NOTIFY_BADEVENT = Reply("NO", responses.badevent(
    ["MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange"]),
    "Unsupported event")
NOTIFY_TOO_MANY = Reply("NO", responses.NOTIFICATIONOVERFLOW, "Too many mailboxes to watch")
# Sent when notifications stop (the session then behaves as after NOTIFY NONE).
NOTIFY_OVERFLOW = responses.untagged_ok(responses.NOTIFICATIONOVERFLOW, "Notifications stopped")


# A command on messages of which some were expunged by another session (RFC
# 2180 4.1.1 FETCH, 4.2.2 STORE without .SILENT): the others were done.
EXPUNGE_ISSUED = Reply("NO", responses.EXPUNGEISSUED, "Some of the requested messages no longer exist")
# STORE of \Recent: only the server sets it (RFC 3501 2.3.2).
STORE_RECENT = Reply("BAD", None, "The \\Recent flag cannot be stored")


def nonexistent() -> ImapError:
    return ImapError(NONEXISTENT.status, NONEXISTENT.code, NONEXISTENT.text)


# Authentication (LOGIN, AUTHENTICATE). A refusal for any reason (unknown
# login, wrong password or code, method not allowed for the account's class,
# bad token) is the same AUTH_FAILED: nobody learns which part was wrong.
AUTH_FAILED = Reply("NO", responses.AUTHENTICATIONFAILED, "Authentication failed")
AUTHZ_FAILED = Reply("NO", responses.AUTHORIZATIONFAILED, "Authorization identity refused")
# The identity provider (or the store) cannot answer now: never "wrong password".
AUTH_UNAVAILABLE = Reply("NO", responses.UNAVAILABLE, "Authentication temporarily unavailable, try again")
AUTH_MECH_UNKNOWN = Reply("NO", responses.CANNOT, "Unsupported authentication mechanism")
AUTH_CANCELLED = Reply("BAD", None, "Authentication cancelled")
AUTH_BAD_BASE64 = Reply("BAD", None, "Invalid base64")
AUTH_MALFORMED = Reply("BAD", None, "Malformed authentication response")


# APPEND (RFC 7889 APPENDLIMIT, RFC 3502 MULTIAPPEND, RFC 4469 CATENATE,
# RFC 3516 BINARY, RFC 6855 UTF8=ACCEPT). Any of these ends the whole command:
# none of its messages is stored.
APPEND_TOO_BIG = Reply("NO", responses.TOOBIG, "Message too big")
APPEND_OVER_LIMIT = Reply("NO", responses.LIMIT, "Too much data in one APPEND")
APPEND_TOO_MANY = Reply("NO", responses.LIMIT, "Too many messages in one APPEND")
APPEND_EMPTY = Reply("NO", responses.CANNOT, "Cannot save a zero-byte message")
APPEND_UTF8_NOT_ENABLED = Reply("BAD", None, "UTF8 data needs ENABLE UTF8=ACCEPT")
# RFC 6855 4: before ENABLE UTF8=ACCEPT, 8-bit header fields are refused.
APPEND_8BIT_HEADERS = Reply("NO", None, "8-bit header fields need ENABLE UTF8=ACCEPT")
APPEND_TRYCREATE = Reply("NO", responses.TRYCREATE, "Mailbox does not exist")
CATENATE_TOO_BIG = Reply("NO", responses.TOOBIG, "Composed message too big")
# RFC 6855 3: after ENABLE UTF8=ACCEPT a SEARCH CHARSET conflicts with UTF-8.
SEARCH_CHARSET_UTF8 = Reply("BAD", None, "No CHARSET once UTF8=ACCEPT is enabled")
# RFC 9051 has no \Recent: after ENABLE IMAP4rev2 its grammar has neither the
# NEW, OLD and RECENT search keys nor the RECENT status item.
REV2_SEARCH_RECENT = Reply("BAD", None, "NEW, OLD and RECENT are not IMAP4rev2 search keys")
SEARCH_TOO_MANY_KEYS = Reply("NO", responses.LIMIT, "Too many search keys")
REV2_STATUS_RECENT = Reply("BAD", None, "RECENT is not an IMAP4rev2 status item")
# The texts of NO [BADURL ...] (`badurl`); the first is for both a message
# that does not exist and one that may not be read.
BADURL_MISSING = "No such message"
BADURL_OTHER_SERVER = "URL names another server"
BADURL_OTHER_USER = "URL names another user"


def badurl(url: str, text: str = "Bad URL") -> ImapError:
    """RFC 4469 ``NO [BADURL url]``: a CATENATE URL that is invalid, or names a
    message or part this user cannot read or that does not exist (one answer
    for both, as for mailboxes). The URL is echoed with every octet outside
    printable ASCII, and "]", %-escaped: url-resp-text may hold neither CR,
    LF, NUL nor "]", and `text` never holds client data."""
    safe = "".join(
        ch if 33 <= ord(ch) < 127 and ch != "]"
        # The parser keeps the URL's octets as latin-1 characters.
        else "".join(f"%{b:02X}" for b in ch.encode("latin-1" if ord(ch) < 256 else "utf-8"))
        for ch in url
    )
    return ImapError("NO", responses.badurl(safe), text)


def not_allowed_now(command: str) -> Reply:
    """A command in a state that does not allow it (RFC 3501 3)."""
    return Reply("BAD", None, f"{command} not allowed now")


def fail(reply: Reply) -> ImapError:
    """The exception that finishes a command with a catalogue reply."""
    return ImapError(reply.status, reply.code, reply.text)


class NotPermitted(Exception):
    """A policy denial on a mailbox: answered exactly like NotFound."""


class NoPermission(Exception):
    """The mailbox is visible but the right is missing (RFC 4314: e.g. no 'i'
    to APPEND into a mailbox one may read)."""


class AccessWithdrawn(Exception):
    """An open session lost its access (`Policy.session_access`): the
    protocol ends it with this untagged BYE, as Dovecot ends a session whose
    selected mailbox was deleted. Nothing of the command is answered."""

    _BYE = {
        "account-disabled": "Account disabled",
        "mailbox-withdrawn": "Access to the selected mailbox was withdrawn",
    }

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def bye(self) -> bytes:
        return responses.bye(self._BYE.get(self.reason, "Access withdrawn"))


_FIXED: tuple[tuple[type[BaseException], Reply], ...] = (
    (StoreUnavailable, Reply("NO", responses.UNAVAILABLE, "Service temporarily unavailable, try again")),
    (NotFound, NONEXISTENT),
    (NotPermitted, NONEXISTENT),
    (NoPermission, Reply("NO", responses.NOPERM, "Permission denied")),
    (QuotaExceeded, Reply("NO", responses.OVERQUOTA, "Quota exceeded")),
    (AlreadyExists, Reply("NO", responses.ALREADYEXISTS, "Mailbox already exists")),
    (InvalidName, Reply("NO", responses.CANNOT, "Invalid mailbox name")),
    (FolderNotEmpty, Reply("NO", responses.INUSE, "Mailbox has inferiors")),
)


def to_reply(exc: BaseException, *, context: str = "") -> Reply:
    """The reply for any exception raised while running a command."""
    if isinstance(exc, ImapError):
        return exc.reply
    for kind, reply in _FIXED:
        if isinstance(exc, kind):
            if isinstance(exc, StoreUnavailable):
                log.warning("store unavailable during %s", context or "command")
            return reply
    if isinstance(exc, StoreError):
        # A store error with no mapping of its own: a bug on one side or the other.
        pass
    cid = secrets.token_hex(6)
    log.error("unexpected error in %s [cid=%s]", context or "command", cid,
              exc_info=(type(exc), exc, exc.__traceback__))
    return Reply("NO", responses.SERVERBUG, f"Internal error, reference {cid}")
