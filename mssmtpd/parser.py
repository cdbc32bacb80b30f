"""SMTP command grammar (RFC 5321, 1869, 1870, 3030, 3461, 4954, 6152, 6531). Pure.

`parse_command(line)` takes one command line without its CRLF and returns a
frozen, typed command or a `ParseError` carrying the catalogue reply. Nothing
here knows Twisted, the store or the session state: whether a command is
allowed *now* is `mssmtpd.session`'s business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mssmtpd.replies import R, Reply
from policy.sasl import decode_base64

# RFC 5321 4.5.3.1: local part 64, domain 255, path 256 octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
MAX_ENVID = 100  # RFC 3461 4.4
MAX_ORCPT = 500  # RFC 3461 4.2


@dataclass(frozen=True, slots=True)
class ParseError:
    reply: Reply


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Helo:
    domain: str


@dataclass(frozen=True, slots=True)
class Ehlo:
    domain: str


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body: str | None = None  # "7BIT" | "8BITMIME"
    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None  # decoded from xtext
    smtputf8: bool = False
    auth: str | None = None  # RFC 4954 AUTH= (decoded), "<>" when unknown


@dataclass(frozen=True, slots=True)
class MailFrom:
    sender: str  # "" for the null reverse-path
    params: MailParams = field(default_factory=MailParams)


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: tuple[str, ...] | None = None  # ("NEVER",) or subset of SUCCESS/FAILURE/DELAY
    orcpt: str | None = None  # "rfc822;addr" with the address decoded from xtext


@dataclass(frozen=True, slots=True)
class RcptTo:
    recipient: str
    params: RcptParams = field(default_factory=RcptParams)


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Bdat:
    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True)
class Expn:
    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    argument: str


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    mechanism: str  # upper-cased
    initial: bytes | None  # decoded initial response; b"" for "="; None when absent


Command = (
    Helo | Ehlo | MailFrom | RcptTo | Data | Bdat | Rset | Noop | Quit | Vrfy | Expn | Help
    | StartTls | Auth
)

# Every command type, for the "every command has a handler" test.
COMMAND_TYPES: tuple[type, ...] = (
    Helo, Ehlo, MailFrom, RcptTo, Data, Bdat, Rset, Noop, Quit, Vrfy, Expn, Help, StartTls, Auth,
)

# Command line limits, CRLF included. RFC 5321 4.5.3.1.4: 512 octets; each
# MAIL/RCPT extension raises it (RFC 1870 3: SIZE +26, RFC 3461 4: ENVID,
# RET, NOTIFY, ORCPT up to +600, RFC 4954 5: AUTH= +500, RFC 6531): 2048 as
# Postfix's line_length_limit. RFC 4954 4: AUTH and SASL responses 12288.
COMMAND_LINE_MAX = 512
MAIL_RCPT_LINE_MAX = 2048
SASL_LINE_MAX = 12288 + 2


def line_limit(line: bytes) -> int:
    """The longest line (CRLF included) allowed for this command."""
    verb = line[:5].upper()
    if verb in (b"MAIL ", b"RCPT "):
        return MAIL_RCPT_LINE_MAX
    if verb == b"AUTH ":
        return SASL_LINE_MAX
    return COMMAND_LINE_MAX


# RFC 5321 4.2.4: recognised (RFC 821/5321, RFC 1985, RFC 2645, RFC 1845
# verbs) but not implemented answers 502; anything else 500.
UNIMPLEMENTED_VERBS = frozenset({"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB"})

# ---------------------------------------------------------------- lexical pieces

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
# EHLO/HELO only: Windows machine names carry underscores. The name is only
# recorded (Received), never trusted, so accept it as Postfix does.
_HELO_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HELO_DOMAIN_RE = re.compile(rf"^{_HELO_LABEL}(?:\.{_HELO_LABEL})*\.?$")
# Non-ASCII labels (SMTPUTF8 / U-labels): any non-ASCII letters are allowed.
_UDOMAIN_RE = re.compile(r"^[^\x00-\x2c\x2f\x3a-\x40\x5b-\x60\x7b-\x7f.](?:[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]|-|\.)*$")
_IPV4_RE = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_IPV6_RE = re.compile(r"^IPv6:[0-9A-Fa-f:.]{2,45}$", re.IGNORECASE)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_STRING_RE = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*$")
_UATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_UDOT_STRING_RE = re.compile(rf"^{_UATEXT}+(?:\.{_UATEXT}+)*$")
_QUOTED_RE = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$')
_UQUOTED_RE = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"$')
_XTEXT_RE = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")
_ESMTP_KEYWORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_ESMTP_VALUE_RE = re.compile(r"^[\x21-\x3c\x3e-\x7e]+$")


def is_domain(text: str, *, utf8: bool = False) -> bool:
    if not text or len(text) > MAX_DOMAIN:
        return False
    if _DOMAIN_RE.match(text):
        return True
    # The U-label pattern is for non-ASCII names only: an ASCII name that
    # failed the LDH rule above (say "-x") stays invalid.
    return utf8 and not text.isascii() and bool(_UDOMAIN_RE.match(text)) and ".." not in text


def is_address_literal(text: str) -> bool:
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    return bool(_IPV4_RE.match(inner) or _IPV6_RE.match(inner))


def parse_address(text: str, *, utf8: bool = False) -> str | None:
    """A mailbox "local@domain" (RFC 5321 4.1.2) or None when malformed.

    The domain part is lower-cased; the local part is kept as sent (it is the
    receiving side's to interpret, but our own mailboxes are case-insensitive).
    """
    if len(text) > MAX_PATH - 2:
        return None
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return None
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        return None
    dot_re, quoted_re = (_UDOT_STRING_RE, _UQUOTED_RE) if utf8 else (_DOT_STRING_RE, _QUOTED_RE)
    if dot_re.match(local):
        pass
    elif quoted_re.match(local):
        # RFC 5321 4.1.2 / RFC 5322 3.4.1: "dr.martin" and dr.martin are the
        # same mailbox; keep the quotes only where they are needed.
        unquoted = re.sub(r"\\(.)", r"\1", local[1:-1])
        if dot_re.match(unquoted):
            local = unquoted
    else:
        return None
    if not (is_domain(domain, utf8=utf8) or is_address_literal(domain)):
        return None
    return f"{local}@{domain.lower().rstrip('.')}"


def decode_xtext(text: str) -> str | None:
    """RFC 3461 4: "+" followed by two upper-case hex digits encodes a byte."""
    if not _XTEXT_RE.match(text):
        return None
    raw = re.sub(rb"\+([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                 text.encode("ascii"))
    return raw.decode("utf-8", "replace")


def encode_xtext(text: str) -> str:
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "+" or ch == "=" or o < 0x21 or o > 0x7E:
            out.append("".join(f"+{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def _split_path(rest: str) -> tuple[str, str] | None:
    """'<path> params' -> (inside of the brackets, params). Tolerates one
    space after the colon (many clients send it), nothing else."""
    rest = rest[1:] if rest.startswith(" ") else rest
    if not rest.startswith("<"):
        return None
    end = rest.find(">")
    # A quoted local part may hold '>': find the closing bracket after quotes.
    if '"' in rest[: end if end >= 0 else len(rest)]:
        m = re.match(r'^<((?:"(?:[^"\\]|\\.)*"|[^>"])*)>', rest)
        if not m:
            return None
        return m.group(1), rest[m.end():]
    if end < 0:
        return None
    return rest[1:end], rest[end + 1:]


def _strip_source_route(path: str) -> str:
    # RFC 5321 4.1.1.3: "@a,@b:user@d" -> the route MUST be accepted and ignored.
    if path.startswith("@"):
        colon = path.find(":")
        if colon > 0:
            return path[colon + 1:]
    return path


def _parse_params(text: str) -> dict[str, str | None] | ParseError:
    params: dict[str, str | None] = {}
    text = text.strip(" ")
    if not text:
        return params
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _ESMTP_KEYWORD_RE.match(key):
            return ParseError(R.PARAM_SYNTAX)
        if eq and not _ESMTP_VALUE_RE.match(value):
            return ParseError(R.PARAM_SYNTAX)
        ukey = key.upper()
        if ukey in params:
            return ParseError(R.PARAM_SYNTAX)
        params[ukey] = value if eq else None
    return params


def _mail_params(raw: dict[str, str | None]) -> MailParams | ParseError:
    size: int | None = None
    body: str | None = None
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    smtputf8 = False
    for key, value in raw.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                return ParseError(R.PARAM_SYNTAX)
            size = int(value)
        elif key == "BODY":
            if value is None:
                return ParseError(R.PARAM_SYNTAX)
            if value.upper() not in ("7BIT", "8BITMIME"):
                return ParseError(R.BODY_8BIT_NEEDS_8BITMIME)
            body = value.upper()
        elif key == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):
                return ParseError(R.PARAM_SYNTAX)
            ret = value.upper()
        elif key == "ENVID":
            decoded = decode_xtext(value) if value is not None else None
            if decoded is None or len(value or "") > MAX_ENVID:
                return ParseError(R.PARAM_SYNTAX)
            envid = decoded
        elif key == "SMTPUTF8":
            if value is not None:
                return ParseError(R.PARAM_SYNTAX)
            smtputf8 = True
        elif key == "AUTH":
            decoded = decode_xtext(value) if value is not None else None
            if decoded is None:
                return ParseError(R.PARAM_SYNTAX)
            auth = decoded
        else:
            return ParseError(R.PARAM_NOT_IMPLEMENTED)
    return MailParams(size=size, body=body, ret=ret, envid=envid, smtputf8=smtputf8, auth=auth)


_NOTIFY_VALUES = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})


def _rcpt_params(raw: dict[str, str | None]) -> RcptParams | ParseError:
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for key, value in raw.items():
        if key == "NOTIFY":
            if not value:
                return ParseError(R.PARAM_SYNTAX)
            items = tuple(v.upper() for v in value.split(","))
            if (
                not all(i in _NOTIFY_VALUES for i in items)
                or len(set(items)) != len(items)
                or ("NEVER" in items and len(items) > 1)
            ):
                return ParseError(R.PARAM_SYNTAX)
            notify = items
        elif key == "ORCPT":
            if not value or len(value) > MAX_ORCPT:
                return ParseError(R.PARAM_SYNTAX)
            addr_type, semi, xtext = value.partition(";")
            decoded = decode_xtext(xtext) if semi else None
            if decoded is None or not _ESMTP_KEYWORD_RE.match(addr_type):
                return ParseError(R.PARAM_SYNTAX)
            orcpt = f"{addr_type.lower()};{decoded}"
        else:
            return ParseError(R.PARAM_NOT_IMPLEMENTED)
    return RcptParams(notify=notify, orcpt=orcpt)


# ---------------------------------------------------------------- commands


_CTL_RE = re.compile("[\x00-\x1f\x7f]")


def _has_ctl(text: str) -> bool:
    return _CTL_RE.search(text) is not None


def _parse_helo(arg: str, ehlo: bool) -> Command | ParseError:
    arg = arg.strip(" ")
    if not arg or " " in arg:
        return ParseError(R.HELO_SYNTAX)
    if not (is_domain(arg, utf8=True) or is_address_literal(arg)
            or (len(arg) <= MAX_DOMAIN and _HELO_DOMAIN_RE.match(arg))):
        return ParseError(R.HELO_SYNTAX)
    return Ehlo(arg) if ehlo else Helo(arg)


def _parse_mail(arg: str) -> Command | ParseError:
    if not arg[:5].upper() == "FROM:":
        return ParseError(R.PARAM_SYNTAX)
    split = _split_path(arg[5:])
    if split is None:
        return ParseError(R.SENDER_SYNTAX)
    path, rest = split
    if rest and not rest.startswith(" "):
        return ParseError(R.PARAM_SYNTAX)
    raw = _parse_params(rest)
    if isinstance(raw, ParseError):
        return raw
    params = _mail_params(raw)
    if isinstance(params, ParseError):
        return params
    if path == "":
        return MailFrom("", params)
    path = _strip_source_route(path)
    if not path.isascii() and not params.smtputf8:
        return ParseError(R.SMTPUTF8_REQUIRED)
    address = parse_address(path, utf8=params.smtputf8)
    if address is None:
        return ParseError(R.SENDER_SYNTAX)
    return MailFrom(address, params)


def _parse_rcpt(arg: str) -> Command | ParseError:
    if not arg[:3].upper() == "TO:":
        return ParseError(R.PARAM_SYNTAX)
    split = _split_path(arg[3:])
    if split is None:
        return ParseError(R.ADDRESS_SYNTAX)
    path, rest = split
    if rest and not rest.startswith(" "):
        return ParseError(R.PARAM_SYNTAX)
    raw = _parse_params(rest)
    if isinstance(raw, ParseError):
        return raw
    params = _rcpt_params(raw)
    if isinstance(params, ParseError):
        return params
    if path.lower() == "postmaster":
        # RFC 5321 4.5.1: <Postmaster> without a domain must be accepted.
        return RcptTo("postmaster", params)
    path = _strip_source_route(path)
    address = parse_address(path, utf8=True)
    if address is None:
        return ParseError(R.ADDRESS_SYNTAX)
    return RcptTo(address, params)


def _parse_auth(arg: str) -> Command | ParseError:
    parts = arg.strip(" ").split(" ")
    if not parts or not parts[0] or len(parts) > 2:
        return ParseError(R.PARAM_SYNTAX)
    mech = parts[0].upper()
    if not _ESMTP_KEYWORD_RE.match(mech) and "_" not in mech:
        return ParseError(R.PARAM_SYNTAX)
    if len(parts) == 1:
        return Auth(mech, None)
    initial = decode_sasl(parts[1])
    if initial is None:
        return ParseError(R.AUTH_BAD_BASE64)
    return Auth(mech, initial)


def decode_sasl(text: str) -> bytes | None:
    """An initial response: base64, or "=" for an empty one (RFC 4954);
    `policy.sasl.decode_base64`, shared with IMAP."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    return decode_base64(raw)


def _parse_bdat(arg: str) -> Command | ParseError:
    parts = arg.strip(" ").split(" ")
    if not parts[0].isdigit() or len(parts[0]) > 20 or len(parts) > 2:
        return ParseError(R.PARAM_SYNTAX)
    last = False
    if len(parts) == 2:
        if parts[1].upper() != "LAST":
            return ParseError(R.PARAM_SYNTAX)
        last = True
    return Bdat(int(parts[0]), last)


def parse_command(line: bytes, *, utf8: bool = True) -> Command | ParseError:
    """One command line, without its CRLF.

    `utf8`: whether the server accepts UTF-8 in arguments (SMTPUTF8 advertised);
    otherwise a non-ASCII byte is a syntax error.
    """
    try:
        text = line.decode("utf-8") if utf8 else line.decode("ascii")
    except UnicodeDecodeError:
        return ParseError(R.SYNTAX_ERROR)
    if _has_ctl(text.replace("\t", " ")):
        return ParseError(R.SYNTAX_ERROR)
    verb, _, arg = text.partition(" ")
    verb = verb.upper()
    if verb == "EHLO":
        return _parse_helo(arg, True)
    if verb == "HELO":
        return _parse_helo(arg, False)
    if verb == "MAIL":
        return _parse_mail(arg)
    if verb == "RCPT":
        return _parse_rcpt(arg)
    if verb == "DATA":
        return Data() if not arg.strip(" ") else ParseError(R.PARAM_SYNTAX)
    if verb == "BDAT":
        return _parse_bdat(arg)
    if verb == "RSET":
        return Rset() if not arg.strip(" ") else ParseError(R.PARAM_SYNTAX)
    if verb == "NOOP":
        return Noop()  # RFC 5321 4.1.1.9: a parameter is allowed and ignored
    if verb == "QUIT":
        return Quit() if not arg.strip(" ") else ParseError(R.PARAM_SYNTAX)
    if verb == "VRFY":
        return Vrfy(arg.strip(" ")) if arg.strip(" ") else ParseError(R.PARAM_SYNTAX)
    if verb == "EXPN":
        return Expn(arg.strip(" ")) if arg.strip(" ") else ParseError(R.PARAM_SYNTAX)
    if verb == "HELP":
        return Help(arg.strip(" "))
    if verb == "STARTTLS":
        return StartTls() if not arg.strip(" ") else ParseError(R.PARAM_SYNTAX)
    if verb == "AUTH":
        return _parse_auth(arg)
    if verb in UNIMPLEMENTED_VERBS:
        return ParseError(R.NOT_IMPLEMENTED)
    return ParseError(R.SYNTAX_ERROR)
