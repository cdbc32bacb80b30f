"""The conditions a rule may set, compiled once when the matrix is loaded.

Each condition has a plain `test(request)` (the reference meaning, used by
explain) and, when it is a set of values the request either has or has not,
an index entry: the attribute it looks at and the keys it accepts. The
engine ANDs per-attribute bit masks of rules built from those keys, so a
500-rule matrix costs about as much as a 20-rule one (see engine.py); a test
checks that both paths decide alike.

Request keys per attribute (`ATTRIBUTES`) and accepted keys share one
spelling: values are lower-cased (mailbox types upper-cased), an address
pattern is "local@domain", a domain "@domain", a wildcard "*.domain", the
null sender "<>".
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

from conf.loader import did_you_mean
from conf.settings import ListenerRole
from policy.flows.model import AuthMethod, BoxState, FlowRequest
from policy.whitelist import _normalised_forms as normalised_forms
from storage.interface import AccountClass, MailboxType

NULL_SENDER = "<>"
NO_METHOD = "none"  # `method: none`: not logged in
FLOW_ROLES = (ListenerRole.MX.value, ListenerRole.SUBMISSION.value)

_DOMAIN = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
_LOCAL = re.compile(r"^[^\s@]{1,64}$")
_SIZE = re.compile(r"^\s*(\d{1,15})\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class ValueProblem(Exception):
    """A value a rule cannot use; `line` is where it is written."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# ---------------------------------------------------------------- request keys


@functools.lru_cache(maxsize=4096)
def address_keys(address: str) -> tuple[str, ...]:
    """The keys an address matches: itself, "@domain", and "*.parent" for
    each parent domain; ("<>",) for the null sender."""
    a = address.strip().lower()
    if not a:
        return (NULL_SENDER,)
    local, _, domain = a.rpartition("@")
    domain = domain.rstrip(".")
    labels = domain.split(".")
    keys = [f"{local}@{domain}", f"@{domain}"]
    keys += ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]
    return tuple(keys)


@functools.lru_cache(maxsize=1024)
def dn_keys(dn: str) -> tuple[str, ...]:
    """The normalised DN and its reverse (some publications print C= first),
    as the whitelist compares them: peer_dn agrees with peer_whitelisted."""
    forms, reverse = normalised_forms(dn)
    return (forms,) if reverse == forms else (forms, reverse)


def _one(value: Hashable | None) -> tuple[Hashable, ...]:
    return () if value is None else (value,)


ATTRIBUTES: dict[str, Callable[[FlowRequest], tuple[Hashable, ...]]] = {
    "listener": lambda r: (r.listener,),
    "role": lambda r: (r.role.value,),
    "account": lambda r: _one(r.account.lower() if r.account else None),
    "account_class": lambda r: _one(r.account_class.value if r.account_class else None),
    "method": lambda r: (r.auth_method.value if r.auth_method else NO_METHOD,),
    "sender": lambda r: address_keys(r.sender),
    "sender_local": lambda r: (r.sender_local,),
    "sender_box_type": lambda r: _one(r.sender_box_type.value if r.sender_box_type else None),
    "peer_dn": lambda r: dn_keys(r.peer_dn) if r.peer_dn else (),
    "peer_whitelisted": lambda r: _one(r.peer_whitelisted),
    "recipient": lambda r: address_keys(r.recipient),
    "local": lambda r: (r.recipient_local,),
    "whitelisted": lambda r: _one(r.recipient_whitelisted),
    "box_type": lambda r: _one(r.recipient_box_type.value if r.recipient_box_type else None),
    "box_state": lambda r: _one(r.recipient_box_state.value if r.recipient_box_state else None),
}


def _yes_no(value: bool | None, unknown: str) -> str:
    return unknown if value is None else ("true" if value else "false")


# What the request holds, as explain prints it after "got".
ACTUAL: dict[str, Callable[[FlowRequest], str]] = {
    "listener": lambda r: r.listener,
    "role": lambda r: r.role.value,
    "network": lambda r: r.client_ip or "unknown",
    "account": lambda r: r.account or "not logged in",
    "account_class": lambda r: r.account_class.value if r.account_class else "not logged in",
    "method": lambda r: r.auth_method.value if r.auth_method else NO_METHOD,
    "sender": lambda r: r.sender or NULL_SENDER,
    "sender_local": lambda r: _yes_no(r.sender_local, ""),
    "sender_box_type": lambda r: r.sender_box_type.value if r.sender_box_type else "no box here",
    "peer_dn": lambda r: r.peer_dn or "no certificate",
    "peer_whitelisted": lambda r: _yes_no(r.peer_whitelisted, "unknown (no whitelist)"),
    "recipient": lambda r: r.recipient,
    "local": lambda r: _yes_no(r.recipient_local, ""),
    "whitelisted": lambda r: _yes_no(r.recipient_whitelisted, "unknown (no whitelist)"),
    "box_type": lambda r: (r.recipient_box_type.value if r.recipient_box_type
                           else "no box here"),
    "box_state": lambda r: (r.recipient_box_state.value if r.recipient_box_state
                            else "remote recipient"),
    "max_size": lambda r: "unknown" if r.size is None else f"{r.size} bytes",
}


# ---------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a rule: `key` as written ("from.role"), the attribute
    it tests, and what it wants (shown by explain)."""

    key: str
    attribute: str
    line: int
    wanted: str
    # Accepted request keys; None for a condition the index cannot hold
    # (max_size): then `test` runs on every candidate rule.
    accepted: frozenset[Hashable] | None

    def test(self, request: FlowRequest) -> bool:
        assert self.accepted is not None
        accepted = self.accepted
        return any(k in accepted for k in ATTRIBUTES[self.attribute](request))

    def why_not(self, request: FlowRequest) -> str:
        return f"{self.key} wants {self.wanted}, got {ACTUAL[self.attribute](request)}"


@dataclass(frozen=True, slots=True)
class AddressCondition(Condition):
    """sender / recipient patterns; `test` is written out plainly (it is the
    reference the index is checked against)."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".chu.fr" for "*.chu.fr"
    null: bool = False

    def test(self, request: FlowRequest) -> bool:
        value = request.sender if self.attribute == "sender" else request.recipient
        a = value.strip().lower()
        if not a:
            return self.null
        local, at, domain = a.rpartition("@")
        domain = domain.rstrip(".")
        return (f"{local}{at}{domain}" in self.addresses or domain in self.domains
                or any(domain.endswith(s) for s in self.suffixes))


@dataclass(frozen=True, slots=True)
class NetworkCondition(Condition):
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def test(self, request: FlowRequest) -> bool:
        ip = parse_ip(request.client_ip)
        return ip is not None and any(ip in n for n in self.networks if n.version == ip.version)

    def index_keys(self) -> frozenset[tuple[int, int, int]]:
        return frozenset(network_key(n) for n in self.networks)


@dataclass(frozen=True, slots=True)
class AccountCondition(Condition):
    """Exact logins are index keys; the engine matches globs once per login
    and caches the result (an account sends many messages)."""

    logins: frozenset[str] = frozenset()
    globs: tuple[re.Pattern[str], ...] = ()

    def test(self, request: FlowRequest) -> bool:
        if request.account is None:
            return False
        login = request.account.lower()
        return login in self.logins or any(g.match(login) for g in self.globs)


@dataclass(frozen=True, slots=True)
class MaxSizeCondition(Condition):
    """Holds for a message of at most `limit` bytes, and for one whose size
    is not known yet (the decision then says `size_assumed`)."""

    limit: int = 0

    def test(self, request: FlowRequest) -> bool:
        return request.size is None or request.size <= self.limit


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def network_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int]:
    """(version, prefix length, the network's leading bits)."""
    return (net.version, net.prefixlen, int(net.network_address) >> (net.max_prefixlen - net.prefixlen))


# ---------------------------------------------------------------- compiling


Items = list[tuple[object, int]]  # (value, line) of each list item


def _texts(key: str, items: Items) -> list[tuple[str, int]]:
    out = []
    for value, line in items:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueProblem(f"{key}: expected text, got {_shown(value)}", line)
        out.append((str(value).strip(), line))
    return out


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choice(key: str, items: Items, choices: Iterable[str], *, upper: bool = False) -> list[str]:
    allowed = list(choices)
    out = []
    for text, line in _texts(key, items):
        v = text.upper() if upper else text.lower()
        if v not in allowed:
            raise ValueProblem(f"{key}: expected one of {', '.join(allowed)}, got {text!r}"
                               f"{did_you_mean(v, allowed)}", line)
        out.append(v)
    return out


def _listener(key: str, items: Items, listeners: Mapping[str, ListenerRole] | None) -> list[str]:
    out = []
    for text, line in _texts(key, items):
        if listeners is not None:
            if text not in listeners:
                names = ", ".join(listeners) or "none"
                raise ValueProblem(f"{key}: unknown listener {text!r}{did_you_mean(text, listeners)};"
                                   f" the settings define {names}", line)
            if listeners[text].value not in FLOW_ROLES:
                raise ValueProblem(f"{key}: listener {text!r} is an {listeners[text].value} "
                                   "listener; flows are decided on mx and submission listeners",
                                   line)
        out.append(text)
    return out


def _network(key: str, items: Items) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for text, line in _texts(key, items):
        try:
            out.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            hint = ""
            try:
                hint = f" (did you mean {ipaddress.ip_network(text, strict=False)}?)"
            except ValueError:
                pass
            reason = "host bits set" if "host bits set" in str(exc) else "not an IPv4 or IPv6 network"
            raise ValueProblem(f"{key}: bad CIDR {text!r}: {reason}{hint}", line) from None
    return out


def _address(key: str, attribute: str, items: Items, *, null_ok: bool) -> AddressCondition:
    addresses: set[str] = set()
    domains: set[str] = set()
    suffixes: set[str] = set()
    null = False
    texts = _texts(key, items)
    for text, line in texts:
        v = text.lower().rstrip(".")
        if v == NULL_SENDER and null_ok:
            null = True
            continue
        local, at, domain = v.rpartition("@")
        wildcard = domain.startswith("*.")
        bare = domain[2:] if wildcard else domain
        if _DOMAIN.match(bare) and not at and wildcard:
            suffixes.add(bare)
            continue
        if _DOMAIN.match(bare) and not at:
            domains.add(bare)
            continue
        if _DOMAIN.match(bare) and at and not wildcard and _LOCAL.match(local) and "*" not in local:
            addresses.add(v)
            continue
        hint = f" (did you mean {domain}?)" if at and local == "*" and _DOMAIN.match(bare) else ""
        null_text = ", or <> (the null sender)" if null_ok else ""
        raise ValueProblem(f"{key}: expected an address (labo@hopital.fr), a domain "
                           f"(hopital.fr) or a wildcard domain (*.chu.fr){null_text}, "
                           f"got {text!r}{hint}", line)
    accepted = (addresses | {"@" + d for d in domains} | {"*." + s for s in suffixes}
                | ({NULL_SENDER} if null else set()))
    return AddressCondition(
        key, attribute, items[0][1], _wanted(t for t, _ in texts), frozenset(accepted),
        addresses=frozenset(addresses), domains=frozenset(domains),
        suffixes=tuple(sorted("." + s for s in suffixes)), null=null,
    )


def _account(key: str, items: Items) -> AccountCondition:
    texts = _texts(key, items)
    logins: set[str] = set()
    globs: list[re.Pattern[str]] = []
    for text, line in texts:
        v = text.lower()
        if not v or any(c.isspace() for c in v):
            raise ValueProblem(f"{key}: expected a login or a glob such as *@hopital.fr, "
                               f"got {text!r}", line)
        if any(c in v for c in "*?["):
            globs.append(re.compile(fnmatch.translate(v)))
        else:
            logins.add(v)
    return AccountCondition(
        key, "account", items[0][1], _wanted(t for t, _ in texts),
        frozenset(logins), logins=frozenset(logins), globs=tuple(globs),
    )


def _dn(key: str, items: Items) -> Condition:
    texts = _texts(key, items)
    accepted: set[str] = set()
    for text, line in texts:
        if "=" not in text:
            raise ValueProblem(f"{key}: expected a certificate DN such as "
                               f"CN=mx.hopital.fr,OU=1750000001,O=Hopital,C=FR, got {text!r}", line)
        accepted.update(dn_keys(text))
    return Condition(key, "peer_dn", items[0][1], _wanted(t for t, _ in texts), frozenset(accepted))


def _wanted(texts: Iterable[str]) -> str:
    shown = list(texts)
    if len(shown) > 6:
        return " or ".join(shown[:5]) + f" or ... ({len(shown)} in all)"
    return " or ".join(shown)


def parse_size(value: object) -> int | None:
    """10485760, "10M", "512K", "1G" (binary units) -> bytes; None if not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    m = _SIZE.match(value)
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def max_size_condition(value: object, line: int) -> MaxSizeCondition:
    limit = parse_size(value)
    if limit is None:
        raise ValueProblem(f"max_size: expected a size in bytes such as 10485760, 10M or 512K, "
                           f"got {_shown(value)}", line)
    return MaxSizeCondition("max_size", "max_size", line, f"at most {limit} bytes", None,
                            limit=limit)


@dataclass(frozen=True, slots=True)
class Spec:
    """A key of `from:` or `to:`: the request attribute and the kind of value."""

    attribute: str
    kind: str  # listener | choice | network | account | address | bool | dn
    choices: tuple[str, ...] = ()
    upper: bool = False


FROM_KEYS: dict[str, Spec] = {
    "listener": Spec("listener", "listener"),
    "role": Spec("role", "choice", FLOW_ROLES),
    "network": Spec("network", "network"),
    "account": Spec("account", "account"),
    "account_class": Spec("account_class", "choice", tuple(c.value for c in AccountClass)),
    "method": Spec("method", "choice", (*(m.value for m in AuthMethod), NO_METHOD)),
    "sender": Spec("sender", "address"),
    "sender_local": Spec("sender_local", "bool"),
    "box_type": Spec("sender_box_type", "choice", tuple(t.value for t in MailboxType), upper=True),
    "peer_dn": Spec("peer_dn", "dn"),
    "peer_whitelisted": Spec("peer_whitelisted", "bool"),
}
TO_KEYS: dict[str, Spec] = {
    "recipient": Spec("recipient", "address"),
    "local": Spec("local", "bool"),
    "whitelisted": Spec("whitelisted", "bool"),
    "box_type": Spec("box_type", "choice", tuple(t.value for t in MailboxType), upper=True),
    "box_state": Spec("box_state", "choice", tuple(s.value for s in BoxState)),
}


def compile_condition(
    section: str, name: str, value: object, line: int, item_lines: list[int] | None,
    listeners: Mapping[str, ListenerRole] | None,
) -> Condition:
    """The condition `section.name: value` (written at `line`; a list's items
    at `item_lines`). Raises ValueProblem."""
    spec = (FROM_KEYS if section == "from" else TO_KEYS)[name]
    key = f"{section}.{name}"
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueProblem(f"{key}: expected true or false, got {_shown(value)}", line)
        return Condition(key, spec.attribute, line, "true" if value else "false",
                         frozenset({value}))
    if isinstance(value, list):
        if not value:
            raise ValueProblem(f"{key}: an empty list matches nothing; remove the key to match "
                               "anything", line)
        lines = item_lines if item_lines is not None and len(item_lines) == len(value) else (
            [line] * len(value))
        items: Items = list(zip(value, lines, strict=True))
    else:
        items = [(value, line)]
    if spec.kind == "listener":
        names = _listener(key, items, listeners)
        return Condition(key, spec.attribute, line, _wanted(names), frozenset(names))
    if spec.kind == "choice":
        values = _choice(key, items, spec.choices, upper=spec.upper)
        return Condition(key, spec.attribute, line, _wanted(values), frozenset(values))
    if spec.kind == "network":
        nets = _network(key, items)
        cond = NetworkCondition(key, "network", line, _wanted(str(n) for n in nets), None,
                                networks=tuple(nets))
        return NetworkCondition(key, "network", line, cond.wanted, cond.index_keys(),
                                networks=tuple(nets))
    if spec.kind == "account":
        return _account(key, items)
    if spec.kind == "address":
        return _address(key, spec.attribute, items, null_ok=spec.attribute == "sender")
    return _dn(key, items)
