"""The national whitelist (liste blanche MSSanté): domains and operator DNs.

Parsed from the agency's XML. A domain may appear once per operator
certificate DN. Loading keeps the last good copy: a broken file raises
`WhitelistError` and the caller keeps the previous `Whitelist`
(`Policy.reload_whitelist` does exactly that).

The parser is expat driven directly, so that a document type declaration or
an entity (billion laughs, external entities) is refused whatever the file's
encoding, and a 6,500-entry list parses in milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat  # noqa: S410 - DTDs and entities are refused below

NS_URI = "https://listeblanche.mssante.fr/schema"
NS = "{" + NS_URI + "}"
_SEP = "\x1f"  # expat namespace separator: cannot occur in a URI or name
_ROOT = NS_URI + _SEP + "ListeBlancheMSSante"
_DOMAINE = NS_URI + _SEP + "Domaine"
_FIELDS = {NS_URI + _SEP + n: n for n in ("Nom", "DNCertificatOperateur", "DateDeGeneration")}
MAX_SIZE = 64 * 1024 * 1024  # a real list is a few MB


class WhitelistError(Exception):
    pass


# Attribute type spellings seen in DNs, mapped to one name.
_ATTR_ALIASES = {"S": "ST", "SP": "ST", "EMAIL": "EMAILADDRESS", "E": "EMAILADDRESS",
                 "GIVENNAME": "GN", "SURNAME": "SN"}
_SPACES = re.compile(r"\s+")


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash escape (RFC 4514)."""
    if "\\" not in text:
        return text.split(sep)  # the usual case, and much faster
    out, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _rdns(dn: str) -> list[str]:
    rdns = []
    for rdn in _split_unescaped(dn, ","):
        if not rdn.strip():
            continue
        avas = []
        for ava in _split_unescaped(rdn, "+"):
            key, _, value = ava.strip().partition("=")
            k = key.strip().upper()
            k = _ATTR_ALIASES.get(k, k)
            # caseIgnoreMatch with insignificant spaces (X.520) for the value.
            v = value.strip()
            if "  " in v or "\t" in v or "\n" in v:
                v = _SPACES.sub(" ", v)
            v = v.casefold()
            avas.append(f"{k}={v}")
        rdns.append("+".join(sorted(avas)))
    return rdns


def normalise_dn(dn: str) -> str:
    """Compare DNs without caring for spaces around separators, case, the
    order inside a multi-valued RDN, or attribute name spellings (ST/S)."""
    return ",".join(_rdns(dn))


def _normalised_forms(dn: str) -> tuple[str, str]:
    """The DN and its reverse: some publications print the country first."""
    rdns = _rdns(dn)
    return ",".join(rdns), ",".join(reversed(rdns))


@dataclass(frozen=True)
class Whitelist:
    generated: str
    domains: dict[str, frozenset[str]]  # domain -> normalised operator DNs

    def has_domain(self, domain: str) -> bool:
        return domain.strip().lower().rstrip(".") in self.domains

    def allows(self, domain: str, operator_dn: str) -> bool:
        dns = self.domains.get(domain.strip().lower().rstrip("."))
        if not dns:
            return False
        return any(form in dns for form in _normalised_forms(operator_dn))

    def lists_operator(self, operator_dn: str) -> bool:
        """The DN is listed for at least one domain: the check for mail with a
        null sender (bounces, MDN-less DSNs), which names no domain."""
        forms = _normalised_forms(operator_dn)
        return any(form in dns for dns in self.domains.values() for form in forms)

    @property
    def entry_count(self) -> int:
        """(domain, operator DN) pairs; a domain without DN counts once. Not
        __len__: an empty list must not make `if whitelist:` false."""
        return sum(len(v) or 1 for v in self.domains.values())

    @classmethod
    def parse(cls, data: bytes) -> Whitelist:
        if len(data) > MAX_SIZE:
            raise WhitelistError("whitelist file too large")
        return _Parser().parse(data)

    @classmethod
    def load(cls, path: Path) -> Whitelist:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WhitelistError(f"{path}: {exc.strerror}") from exc
        try:
            return cls.parse(data)
        except WhitelistError as exc:
            raise WhitelistError(f"{path}: {exc}") from exc


def load_or_keep(path: Path, previous: Whitelist | None) -> tuple[Whitelist | None, str | None]:
    """(the list to use, the problem or None): a broken file keeps `previous`."""
    try:
        return Whitelist.load(path), None
    except WhitelistError as exc:
        return previous, str(exc)


class _Refused(Exception):
    pass


class _Parser:
    def __init__(self) -> None:
        self.domains: dict[str, set[str]] = {}
        self.generated = ""
        self.stack: list[str] = []
        self.text: list[str] = []
        self.current: dict[str, str] | None = None
        self.root_seen = False

    def parse(self, data: bytes) -> Whitelist:
        p = expat.ParserCreate(namespace_separator=_SEP)
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartDoctypeDeclHandler = self._refuse_dtd
        p.EntityDeclHandler = self._refuse_entity
        p.UnparsedEntityDeclHandler = self._refuse_entity
        p.ExternalEntityRefHandler = self._refuse_entity
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self.text.append
        p.buffer_text = True
        try:
            p.Parse(data, True)
        except _Refused as exc:
            raise WhitelistError(str(exc)) from None
        except expat.ExpatError as exc:
            raise WhitelistError(f"not well-formed XML: {expat.errors.messages[exc.code]} "
                                 f"at line {exc.lineno}") from None
        if not self.root_seen:
            raise WhitelistError("no ListeBlancheMSSante element")
        return Whitelist(self.generated, {k: frozenset(v) for k, v in self.domains.items()})

    def _refuse_dtd(self, *args: object) -> None:
        raise _Refused("DTDs and entities are not accepted in the whitelist")

    def _refuse_entity(self, *args: object) -> int:
        raise _Refused("DTDs and entities are not accepted in the whitelist")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if not self.stack:
            if name != _ROOT:
                shown = name.replace(_SEP, "}")
                raise _Refused(f"root element is {shown}, expected ListeBlancheMSSante "
                               f"in namespace {NS_URI}")
            self.root_seen = True
        elif name == _DOMAINE:
            self.current = {}
        self.stack.append(name)
        self.text.clear()

    def _end(self, name: str) -> None:
        self.stack.pop()
        text = "".join(self.text).strip()
        self.text.clear()
        field = _FIELDS.get(name)
        if field == "DateDeGeneration" and len(self.stack) == 1:
            self.generated = text
        elif field is not None and self.current is not None:
            self.current[field] = text
        elif name == _DOMAINE and self.current is not None:
            self._add(self.current)
            self.current = None

    def _add(self, entry: dict[str, str]) -> None:
        nom = entry.get("Nom", "").lower().rstrip(".")
        if not nom:
            raise _Refused("a Domaine has no Nom")
        dns = self.domains.setdefault(nom, set())
        dn = entry.get("DNCertificatOperateur", "")
        if dn:
            dns.add(normalise_dn(dn))
