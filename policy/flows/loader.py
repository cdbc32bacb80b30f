"""flows.yaml -> `FlowMatrix`, with every problem named by file, line and rule.

Problems are collected, not stopped at, and raised together as one
`FlowMatrixError`; each prints as ``<file>:<line>: rule <id>: <message>``
(without the rule part outside a rule)::

    flows.yaml:14: rule lab-out: unknown key form (did you mean from?)
    flows.yaml:22: rule vpn: from.network: bad CIDR '10.0.0.1/8': host bits set (did you mean 10.0.0.0/8?)

Line numbers come from PyYAML's nodes (`start_mark.line`): the loader below
builds mappings and lists that remember the line of each key and item.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conf.loader import did_you_mean
from conf.settings import ListenerRole, Settings
from policy.flows.conditions import (
    FROM_KEYS,
    TO_KEYS,
    Condition,
    ValueProblem,
    compile_condition,
    max_size_condition,
)
from policy.flows.engine import FlowMatrix, Rule
from policy.flows.model import DEFAULT_RULE, FlowReply, FlowVerdict

VERSION = 1
MAX_FILE_SIZE = 4 * 1024 * 1024
TOP_KEYS = ("version", "default", "default_reply", "rules")
RULE_KEYS = ("id", "description", "from", "to", "max_size", "action", "reply")
ACTIONS = tuple(v.value for v in FlowVerdict)
# Words people write for ours: named in the hint.
_ALIASES = {"flows": "rules", "name": "id", "comment": "description", "reject": "deny",
            "refuse": "deny", "accept": "allow", "permit": "allow", "defer": "tempfail",
            "size": "max_size"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$")
_REPLY = re.compile(r"^(\d{3}) +(\d)\.(\d{1,3})\.(\d{1,3}) +(\S.*)$")


@dataclass(frozen=True, slots=True)
class FlowProblem:
    file: str
    line: int | None  # None: the file as a whole (cannot read it)
    rule: str | None  # the rule's id, "#N" when it has none; None outside rules
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: rule {self.rule}: {self.message}" if self.rule else (
            f"{where}: {self.message}")


class FlowMatrixError(Exception):
    """The matrix cannot be used; `problems` holds every problem found."""

    def __init__(self, problems: list[FlowProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# ---------------------------------------------------------------- YAML with lines


class _Map(dict[Any, Any]):
    line: int = 0
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    line: int = 0
    item_lines: list[int]


# libyaml's scanner when PyYAML has it (a 500-rule file loads 5x faster);
# construction is ours either way.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_SafeBase):  # type: ignore[valid-type,misc]
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int, int]] = []  # (key, line, first line)
        self.bad_keys: list[int] = []  # lines of keys that are not plain values


def _mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    m = _Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        value = loader.construct_object(value_node, deep=True)
        try:
            hash(key)
        except TypeError:  # a list, a mapping, a set (`? !!set {a}`)
            loader.bad_keys.append(line)
            continue
        if isinstance(key, list | dict):
            loader.bad_keys.append(line)
            continue
        if key in m.key_lines:
            loader.duplicates.append((str(key), line, m.key_lines[key]))
            continue
        m[key] = value
        m.key_lines[key] = line
    return m


def _sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    s = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    s.line = node.start_mark.line + 1
    s.item_lines = [child.start_mark.line + 1 for child in node.value]
    return s


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


# PyYAML's parser takes time quadratic in the nesting of flow collections
# ("[[[[…": 5,000 levels, 12 s); a matrix needs a handful.
MAX_FLOW_NESTING = 32


def _flow_nesting(text: str) -> tuple[int, int]:
    """(deepest [ / { nesting, its line), counting brackets in strings too:
    a bound, not a parse."""
    depth = deepest = line = at = 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, i
        elif ch in "]}" and depth:
            depth -= 1
    if deepest:
        line = text.count("\n", 0, at) + 1
    return deepest, line


def _parse_yaml(text: str, name: str) -> Any:
    deepest, line = _flow_nesting(text)
    if deepest > MAX_FLOW_NESTING:
        raise FlowMatrixError([FlowProblem(
            name, line, None, f"nesting deeper than {MAX_FLOW_NESTING} levels of [ ] or {{ }}")])
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
        # Aliases share one structure under many names (cheap to load), but
        # printed in an error message six levels of ten are a million
        # elements: refused whole.
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1 if event.start_mark is not None else 1
                raise FlowMatrixError([FlowProblem(
                    name, line, None, "aliases (*name) are not allowed in a flow matrix")])
    except (ValueError, TypeError, RecursionError) as exc:
        # e.g. an integer of thousands of digits (Python's int limit)
        raise FlowMatrixError([FlowProblem(
            name, 1, None, f"invalid YAML value: {str(exc)[:200]}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        line = mark.line + 1 if mark is not None else 1
        raise FlowMatrixError([FlowProblem(
            name, line, None,
            f"invalid YAML: {problem}{f' ({context})' if context else ''}")]) from None
    finally:
        loader.dispose()
    problems = [FlowProblem(name, line, None, f"duplicate key {key!r} (first at line {first})")
                for key, line, first in loader.duplicates]
    problems += [FlowProblem(name, line, None, "a key must be plain text")
                 for line in loader.bad_keys]
    if problems:
        raise FlowMatrixError(sorted(problems, key=lambda p: p.line or 0))
    return data


# ---------------------------------------------------------------- values


def parse_reply(text: object, verdict: FlowVerdict) -> FlowReply:
    """"550 5.7.1 Text" for deny, "4xx 4.x.x Text" for tempfail. Raises
    ValueError with what to write instead."""
    cls = "5" if verdict is FlowVerdict.DENY else "4"
    expected = f'expected "{cls}xx {cls}.x.x text" for {verdict.value}'
    example = ' (e.g. "550 5.7.1 Relaying denied")' if cls == "5" else (
        ' (e.g. "451 4.7.1 Try again later")')
    if not isinstance(text, str):
        raise ValueError(f"{expected}{example}, got {type(text).__name__}")
    m = _REPLY.match(text.strip())
    if not m:
        raise ValueError(f"{expected}{example}, got {text!r}")
    code, status_class, subject, detail, words = m.groups()
    if code[0] != cls:
        other = "tempfail" if code[0] == "4" else "deny" if code[0] == "5" else None
        use = f" (use action: {other} for a {code[0]}xx reply)" if other else ""
        raise ValueError(f"{expected}, got code {code}{use}")
    if not "0" <= code[1] <= "5":
        raise ValueError(f"{expected}, got code {code} (SMTP codes are {cls}0x to {cls}5x)")
    if status_class != cls:
        raise ValueError(f"{expected}: enhanced status {status_class}.{subject}.{detail} "
                         f"does not go with code {code}")
    if not words.isascii() or not words.isprintable() or len(words) > 200:
        raise ValueError(f"{expected}: the text must be printable ASCII, at most 200 characters")
    return FlowReply(int(code), f"{status_class}.{subject}.{detail}", words.strip())


def _unknown_key(key: object, known: tuple[str, ...], elsewhere: dict[str, str]) -> str:
    word = str(key)
    if word in elsewhere:
        return f"unknown key {word} (it belongs under {elsewhere[word]})"
    hint = did_you_mean(word, known)
    if not hint and _ALIASES.get(word) in known:
        hint = f" (did you mean {_ALIASES[word]}?)"
    return f"unknown key {word}{hint}"


def _action(value: object) -> FlowVerdict:
    word = str(value).strip().lower()
    if isinstance(value, str) and word in ACTIONS:
        return FlowVerdict(word)
    hint = did_you_mean(word, ACTIONS)
    if not hint and _ALIASES.get(word) in ACTIONS:
        hint = f" (did you mean {_ALIASES[word]}?)"
    raise ValueError(f"expected one of {', '.join(ACTIONS)}, got {value!r}{hint}")


# ---------------------------------------------------------------- the matrix


class _Parser:
    def __init__(self, name: str, listeners: Mapping[str, ListenerRole] | None) -> None:
        self.name = name
        self.listeners = listeners
        self.problems: list[FlowProblem] = []
        self.ids: dict[str, int] = {}  # rule id -> line

    def problem(self, line: int, rule: str | None, message: str) -> None:
        self.problems.append(FlowProblem(self.name, line, rule, message))

    def matrix(self, doc: Any, checksum: str) -> FlowMatrix:
        if doc is None:
            self.problem(1, None, "the file is empty: expected version, default and rules")
            raise FlowMatrixError(self.problems)
        if not isinstance(doc, _Map):
            self.problem(1, None, "expected a mapping with version, default and rules")
            raise FlowMatrixError(self.problems)
        lines = doc.key_lines
        for key in doc:
            if key not in TOP_KEYS:
                where = {k: "a rule" for k in RULE_KEYS}
                self.problem(lines[key], None, _unknown_key(key, TOP_KEYS, where))
        version = doc.get("version", VERSION)
        if version != VERSION or isinstance(version, bool):
            self.problem(lines.get("version", doc.line), None,
                         f"version: expected {VERSION}, got {version!r}")
        default = FlowVerdict.DENY
        if "default" not in doc:
            self.problem(doc.line, None, "required key default is missing "
                         "(deny, or allow, when no rule matches)")
        else:
            try:
                default = _action(doc["default"])
            except ValueError as exc:
                self.problem(lines["default"], None, f"default: {exc}")
        reply = None
        if "default_reply" in doc:
            if default is FlowVerdict.ALLOW:
                self.problem(lines["default_reply"], None,
                             "default_reply: an allowing default sends no reply; remove it")
            else:
                try:
                    reply = parse_reply(doc["default_reply"], default)
                except ValueError as exc:
                    self.problem(lines["default_reply"], None, f"default_reply: {exc}")
        rules: list[Rule] = []
        raw_rules = doc.get("rules")
        if "rules" not in doc:
            self.problem(doc.line, None, "required key rules is missing "
                         "(a list of rules; rules: [] when the default decides everything)")
        elif raw_rules is None:
            pass  # "rules:" with nothing under it: no rule
        elif not isinstance(raw_rules, _Seq):
            self.problem(lines["rules"], None, "rules: expected a list of rules (- id: ...)")
        else:
            for i, (raw, line) in enumerate(zip(raw_rules, raw_rules.item_lines, strict=True)):
                rule = self.rule(raw, line, i)
                if rule is not None:
                    rules.append(rule)
            self.check_order(rules)
        if self.problems:
            raise FlowMatrixError(sorted(self.problems, key=lambda p: p.line or 0))
        return FlowMatrix(rules, default, reply, source=self.name, checksum=checksum,
                          default_line=lines.get("default", doc.line))

    def rule(self, raw: Any, line: int, index: int) -> Rule | None:
        label = f"#{index + 1}"
        if not isinstance(raw, _Map):
            self.problem(line, label, "expected a mapping (id, from, to, action, reply)")
            return None
        lines = raw.key_lines
        before = len(self.problems)
        rule_id = raw.get("id")
        if "id" not in raw:
            self.problem(raw.line, label, "required key id is missing")
        elif not isinstance(rule_id, str) or not _ID.match(rule_id):
            self.problem(lines["id"], label, "id: expected letters, digits and . _ : - "
                         f"(at most 80, no spaces), got {rule_id!r}")
        elif rule_id == DEFAULT_RULE:
            self.problem(lines["id"], label, f"id: {DEFAULT_RULE!r} names the default; "
                         "choose another id")
        elif rule_id in self.ids:
            label = rule_id
            self.problem(lines["id"], label, f"duplicate id (first at line {self.ids[rule_id]})")
        else:
            label = rule_id
            self.ids[rule_id] = lines["id"]
        elsewhere = {k: "from:" for k in FROM_KEYS} | {k: "to:" for k in TO_KEYS}
        for key in raw:
            if key not in RULE_KEYS:
                self.problem(lines[key], label, _unknown_key(key, RULE_KEYS, elsewhere))
        conditions: list[Condition] = []
        for section, keys, other in (("from", FROM_KEYS, TO_KEYS), ("to", TO_KEYS, FROM_KEYS)):
            conditions += self.section(raw, section, keys, other, label)
        if "max_size" in raw:
            try:
                conditions.append(max_size_condition(raw["max_size"], lines["max_size"]))
            except ValueProblem as exc:
                self.problem(exc.line, label, exc.message)
        verdict = FlowVerdict.DENY
        if "action" not in raw:
            self.problem(raw.line, label, "required key action is missing (allow, deny or "
                         "tempfail)")
        else:
            try:
                verdict = _action(raw["action"])
            except ValueError as exc:
                self.problem(lines["action"], label, f"action: {exc}")
        reply = None
        if "reply" in raw:
            if verdict is FlowVerdict.ALLOW:
                self.problem(lines["reply"], label, "reply: an allow rule sends no reply of "
                             "its own; remove it")
            else:
                try:
                    reply = parse_reply(raw["reply"], verdict)
                except ValueError as exc:
                    self.problem(lines["reply"], label, f"reply: {exc}")
        description = raw.get("description", "")
        if len(self.problems) > before:
            return None
        self.check_listener_roles(conditions, label, raw.line)
        return Rule(label, raw.line, tuple(conditions), verdict, reply,
                    description if isinstance(description, str) else str(description))

    def section(self, raw: _Map, section: str, keys: Mapping[str, object],
                other: Mapping[str, object], label: str) -> list[Condition]:
        if section not in raw or raw[section] is None:
            return []
        body = raw[section]
        if not isinstance(body, _Map):
            self.problem(raw.key_lines[section], label,
                         f"{section}: expected a mapping of conditions, such as "
                         f"{section}: {{{next(iter(keys))}: ...}}")
            return []
        out = []
        other_section = "to:" if section == "from" else "from:"
        for key, value in body.items():
            line = body.key_lines[key]
            if key not in keys:
                elsewhere = {k: other_section for k in other if k not in keys}
                elsewhere |= {k: "the rule itself" for k in RULE_KEYS if k not in keys}
                self.problem(line, label, f"{section}: "
                             + _unknown_key(key, tuple(keys), elsewhere))
                continue
            item_lines = value.item_lines if isinstance(value, _Seq) else None
            try:
                out.append(compile_condition(section, key, value, line, item_lines,
                                             self.listeners))
            except ValueProblem as exc:
                self.problem(exc.line, label, exc.message)
        return out

    def check_listener_roles(self, conditions: list[Condition], label: str, line: int) -> None:
        """A rule naming listeners and roles that exclude each other never matches."""
        if self.listeners is None:
            return
        named = next((c for c in conditions if c.attribute == "listener"), None)
        role = next((c for c in conditions if c.attribute == "role"), None)
        if named is None or role is None or named.accepted is None or role.accepted is None:
            return
        roles = {self.listeners[str(n)].value for n in named.accepted if n in self.listeners}
        if roles and not roles & role.accepted:
            self.problem(line, label, f"can never match: listener {named.wanted} has role "
                         f"{' or '.join(sorted(roles))}, the rule wants role {role.wanted}")

    def check_order(self, rules: list[Rule]) -> None:
        catch_all = next((r for r in rules if r.catch_all), None)
        if catch_all is None:
            return
        for rule in rules[rules.index(catch_all) + 1:]:
            self.problem(rule.line, rule.id, f"can never match: rule {catch_all.id} "
                         f"(line {catch_all.line}) before it matches every flow")


def listener_roles(settings: Settings) -> dict[str, ListenerRole]:
    """Listener name -> role, for validating `from.listener`."""
    return {lst.name: lst.role for lst in settings.listeners}


def checksum_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_matrix(data: bytes | str, name: str = "<flows>", *,
                 listeners: Mapping[str, ListenerRole] | None = None) -> FlowMatrix:
    """Validates and compiles a matrix. `listeners` (name -> role, see
    `listener_roles`) checks listener names; None skips that check. Raises
    FlowMatrixError with every problem."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FlowMatrixError([FlowProblem(name, None, None, "cannot read: not UTF-8 text")]
                              ) from None
    doc = _parse_yaml(text, name)
    return _Parser(name, listeners).matrix(doc, checksum_of(raw))


def read_matrix_file(path: Path) -> bytes:
    """The file's bytes; raises FlowMatrixError when it cannot be read."""
    name = str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        raise FlowMatrixError([FlowProblem(name, None, None, "cannot read: no such file")]
                              ) from None
    except OSError as exc:
        raise FlowMatrixError([FlowProblem(name, None, None,
                                           f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > MAX_FILE_SIZE:
        raise FlowMatrixError([FlowProblem(name, None, None, "cannot read: larger than "
                                           f"{MAX_FILE_SIZE // (1024 * 1024)} MiB")])
    return data


def load_matrix(path: str | Path, *,
                listeners: Mapping[str, ListenerRole] | None = None) -> FlowMatrix:
    """Reads, validates and compiles a matrix file. Raises FlowMatrixError."""
    path = Path(path)
    return parse_matrix(read_matrix_file(path), str(path), listeners=listeners)
