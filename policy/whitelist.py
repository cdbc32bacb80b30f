"""The national whitelist (liste blanche MSSanté): domains and operator DNs.

Parsed from the agency's XML. A domain may appear once per operator
certificate DN. Loading keeps the last good copy: a broken file raises
`WhitelistError` and the caller keeps the previous `Whitelist`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - national file; no entity expansion by ET
from dataclasses import dataclass
from pathlib import Path

NS = "{https://listeblanche.mssante.fr/schema}"


class WhitelistError(Exception):
    pass


def normalise_dn(dn: str) -> str:
    """Compare DNs without caring for spaces around separators or case of attribute names."""
    parts = []
    for rdn in dn.split(","):
        key, _, value = rdn.strip().partition("=")
        parts.append(f"{key.strip().upper()}={value.strip()}")
    return ",".join(parts)


@dataclass(frozen=True)
class Whitelist:
    generated: str
    domains: dict[str, frozenset[str]]  # domain -> normalised operator DNs

    def has_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.domains

    def allows(self, domain: str, operator_dn: str) -> bool:
        dns = self.domains.get(domain.lower().rstrip("."))
        return bool(dns) and normalise_dn(operator_dn) in dns  # type: ignore[operator]

    @classmethod
    def parse(cls, data: bytes) -> Whitelist:
        if b"<!ENTITY" in data or b"<!DOCTYPE" in data:
            raise WhitelistError("DTDs and entities are not accepted in the whitelist")
        try:
            root = ET.fromstring(data)  # noqa: S314
        except ET.ParseError as exc:
            raise WhitelistError(f"not well-formed XML: {exc}") from exc
        if root.tag != NS + "ListeBlancheMSSante":
            raise WhitelistError(f"root element is {root.tag}, expected ListeBlancheMSSante")
        generated = (root.findtext(NS + "DateDeGeneration") or "").strip()
        domains: dict[str, set[str]] = {}
        for dom in root.iter(NS + "Domaine"):
            name = (dom.findtext(NS + "Nom") or "").strip().lower()
            dn = (dom.findtext(NS + "DNCertificatOperateur") or "").strip()
            if not name:
                raise WhitelistError("a Domaine has no Nom")
            entry = domains.setdefault(name, set())
            if dn:
                entry.add(normalise_dn(dn))
        return cls(generated, {k: frozenset(v) for k, v in domains.items()})

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
