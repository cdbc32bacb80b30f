"""YAML file -> `conf.settings.Settings`, with errors a person can act on.

Every problem found in a file is collected into ONE `ConfigError`, one line per
problem, shaped ``<file>: <key.path>: <what was expected>``::

    mss.yaml: listeners.0.port: expected an integer from 0 to 65535, got 'abc'
    mss.yaml: limits.mesage_size: unknown key (did you mean message_size?)

YAML syntax errors name the line and column instead of a key path. Relative
paths in the file (and a relative SQLite database URL) are resolved against the
directory holding the file, so a configuration directory can be moved as a
whole.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import logging
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from conf.settings import ListenerRole, ListenerSettings, Settings, TLSMode

SQLITE_PREFIX = "sqlite:///"
log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A configuration file cannot be used; `lines` holds one line per problem."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


# ---------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of silently
    keeping the last one: a key written twice is almost always a mistake."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int, int]] = []  # (key, line, first line)


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in seen:
                loader.duplicates.append((str(key), key_node.start_mark.line + 1, seen[key]))
            else:
                seen[key] = key_node.start_mark.line + 1
        except TypeError:  # unhashable key: let the base constructor report it
            pass
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _yaml_problem(name: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
    context = getattr(exc, "context", None)
    extra = f" ({context})" if context else ""
    return f"{name}: {where}: invalid YAML: {problem}{extra}"


def parse_yaml(text: str, name: str) -> Any:
    """Parses YAML text; raises ConfigError on syntax errors and duplicate keys."""
    loader = _UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(name, exc)]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            [
                f"{name}: line {line}: duplicate key {key!r} (first at line {first})"
                for key, line, first in loader.duplicates
            ]
        )
    return data


# ---------------------------------------------------------------- pydantic errors


def _unwrap_optional(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _walk(loc: Sequence[int | str]) -> tuple[Any, FieldInfo | None, type[BaseModel] | None]:
    """Follows an error location through the Settings models.

    Returns (the type at `loc`, the FieldInfo of the last model field crossed,
    the model class holding `loc[-1]` when it names a field or an unknown key).
    """
    tp: Any = Settings
    info: FieldInfo | None = None
    parent: type[BaseModel] | None = None
    for part in loc:
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            parent = tp
            info = tp.model_fields.get(str(part))
            if info is None:
                return None, None, parent
            tp = info.annotation
            continue
        parent = None
        args = get_args(tp)
        if get_origin(tp) in (list, tuple, set, frozenset) and args:
            tp = args[0]
        elif get_origin(tp) is dict and len(args) == 2:
            tp = args[1]
        else:
            return None, info, None
    return _unwrap_optional(tp), info, parent


def _bounds(info: FieldInfo | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in info.metadata if info is not None else ():
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            value = getattr(meta, attr, None)
            if value is not None and isinstance(meta, annotated_types.BaseMetadata):
                out[attr] = value
    return out


def _describe_number(kind: str, bounds: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return str(int(v)) if float(v).is_integer() else str(v)

    low = ("ge", bounds["ge"]) if "ge" in bounds else ("gt", bounds["gt"]) if "gt" in bounds else None
    high = ("le", bounds["le"]) if "le" in bounds else ("lt", bounds["lt"]) if "lt" in bounds else None
    if low and high and low[0] == "ge" and high[0] == "le":
        return f"{kind} from {fmt(low[1])} to {fmt(high[1])}"
    parts = []
    if low:
        parts.append(f"{'>=' if low[0] == 'ge' else '>'} {fmt(low[1])}")
    if high:
        parts.append(f"{'<=' if high[0] == 'le' else '<'} {fmt(high[1])}")
    return f"{kind} {' and '.join(parts)}" if parts else kind


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected_for_type(tp: Any, info: FieldInfo | None) -> str:
    bounds = _bounds(info)
    if tp is bool:
        return "true or false"
    if tp is int:
        return _describe_number("an integer", bounds)
    if tp is float:
        return _describe_number("a number", bounds)
    if tp is str:
        return "a string"
    if tp is Path:
        return "a file path"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping"
    origin = get_origin(tp)
    if origin in (list, tuple, set, frozenset):
        n = bounds.get("min_length")
        return f"a list of at least {n} item{'s' if n != 1 else ''}" if n else "a list"
    if origin is dict:
        return "a mapping"
    return "a valid value"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean X?)" naming the closest of `choices`, or "" when none
    is close: the hint of every unknown key or value in a file people edit."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _key_path(loc: Iterable[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _problem(error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    tp, info, parent = _walk(loc)
    if kind == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), parent.model_fields) if parent is not None else ""
        return f"unknown key{hint}"
    expected = _expected_for_type(tp, info)
    if kind == "missing":
        return f"required key is missing (expected {expected})"
    if kind == "value_error":
        msg = str(error.get("msg", "")).removeprefix("Value error, ")
        if msg.startswith("must be "):
            return f"expected {msg.removeprefix('must be ')}, got {_got(value)}"
        return f"{msg}, got {_got(value)}"
    if kind == "too_short" and get_origin(tp) in (list, tuple, set, frozenset):
        return f"expected {expected}, got {len(value) if hasattr(value, '__len__') else 0}"
    if kind == "enum":
        hint = ""
        if isinstance(tp, type) and issubclass(tp, enum.Enum) and isinstance(value, str):
            close = difflib.get_close_matches(value, [str(m.value) for m in tp], n=1, cutoff=0.6)
            if close:
                hint = f" (did you mean {close[0]}?)"
        return f"expected {expected}, got {_got(value)}{hint}"
    if expected == "a valid value":
        return f"{str(error.get('msg', 'invalid value')).lower()}, got {_got(value)}"
    return f"expected {expected}, got {_got(value)}"


def _problems(name: str, exc: ValidationError) -> list[str]:
    return [f"{name}: {_key_path(err['loc'])}: {_problem(err)}" for err in exc.errors()]


# ---------------------------------------------------------------- paths


def _resolve_paths(model: BaseModel, base: Path) -> BaseModel:
    """Returns a copy of `model` with every relative Path made absolute."""
    updates: dict[str, Any] = {}
    for field_name in type(model).model_fields:
        value = getattr(model, field_name)
        new = _resolve_value(value, base)
        if new is not value:
            updates[field_name] = new
    return model.model_copy(update=updates) if updates else model


def _resolve_value(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value.expanduser()).resolve()
    if isinstance(value, BaseModel):
        return _resolve_paths(value, base)
    if isinstance(value, list):
        items = [_resolve_value(v, base) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def resolve_database_url(url: str, base: Path) -> str:
    """``sqlite:///mss.db`` means mss.db next to the configuration file."""
    if url.startswith(SQLITE_PREFIX):
        rest = url[len(SQLITE_PREFIX):]
        db_path, sep, query = rest.partition("?")
        if db_path and db_path != ":memory:" and not db_path.startswith("/"):
            return SQLITE_PREFIX + str((base / db_path).resolve()) + sep + query
    return url


# ---------------------------------------------------------------- checks beyond types


def _listener_problems(name: str, settings: Settings) -> list[str]:
    problems: list[str] = []
    seen_names: dict[str, int] = {}
    seen_addr: dict[tuple[str, int], int] = {}
    for i, lst in enumerate(settings.listeners):
        if lst.name in seen_names:
            problems.append(
                f"{name}: listeners.{i}.name: expected a unique name, "
                f"{lst.name!r} is also listeners.{seen_names[lst.name]}"
            )
        seen_names.setdefault(lst.name, i)
        if lst.port != 0:
            key = (lst.address, lst.port)
            if key in seen_addr:
                problems.append(
                    f"{name}: listeners.{i}.port: expected a free address, "
                    f"{lst.address}:{lst.port} is also listeners.{seen_addr[key]}"
                )
            seen_addr.setdefault(key, i)
        if lst.role is ListenerRole.AUTOCONFIG and lst.tls is TLSMode.STARTTLS:
            problems.append(
                f"{name}: listeners.{i}.tls: expected implicit (HTTPS) for an autoconfig "
                "listener (or none on loopback), got starttls"
            )
        if lst.tls is TLSMode.NONE and not is_loopback(lst.address):
            # Passwords (LOGIN, AUTH PLAIN) are accepted in clear on such a
            # listener: they must never cross a network.
            problems.append(
                f"{name}: listeners.{i}.address: expected a loopback address "
                f"(127.0.0.0/8 or ::1) for a listener with tls none, got {lst.address!r}"
            )
    return problems


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 (or ::ffff:127.x.y.z); a host name never is."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _named_listeners(settings: Settings) -> Settings:
    """Gives unnamed listeners a name (role-port) so logs and errors can cite it."""
    named: list[ListenerSettings] = []
    changed = False
    for lst in settings.listeners:
        if not lst.name:
            lst = lst.model_copy(update={"name": f"{lst.role.value}-{lst.port}"})
            changed = True
        named.append(lst)
    return settings.model_copy(update={"listeners": named}) if changed else settings


def input_files(settings: Settings) -> list[tuple[str, Path]]:
    """(key path, file) of every file the server reads at start-up."""
    files: list[tuple[str, Path]] = [
        ("tls.cert_file", settings.tls.cert_file),
        ("tls.key_file", settings.tls.key_file),
        ("key_file", settings.key_file),
    ]
    files += [(f"tls.ca_files.{i}", p) for i, p in enumerate(settings.tls.ca_files)]
    files += [(f"tls.crl_files.{i}", p) for i, p in enumerate(settings.tls.crl_files)]
    for key in ("client_cert_file", "client_key_file"):
        p = getattr(settings.tls, key)
        if p is not None:
            files.append((f"tls.{key}", p))
    # With a URL, the whitelist file is only the last good copy: fetched if missing.
    keys = ["flows_file", "whitelist_ca_file"]
    if settings.policy.whitelist_url is None:
        keys.append("whitelist_file")
    for key in keys:
        p = getattr(settings.policy, key)
        if p is not None:
            files.append((f"policy.{key}", p))
    idp = settings.identity_provider
    if idp is not None:
        for key in ("ca_file", "client_secret_file"):
            p = getattr(idp, key)
            if p is not None:
                files.append((f"identity_provider.{key}", p))
    return files


def deprecations(name: str, settings: Settings) -> list[str]:
    """Settings still read but to be replaced, one line each (the server and
    `mssctl` log them as warnings)."""
    return [f"{name}: {line}" for line in settings.policy.deprecations()]


def missing_files(name: str, settings: Settings) -> list[str]:
    return [
        f"{name}: {key}: expected an existing file, {path} does not exist"
        for key, path in input_files(settings)
        if not path.is_file()
    ]


# ---------------------------------------------------------------- entry points


def settings_from_data(data: Any, name: str, base: Path, *, check_files: bool = False) -> Settings:
    """Validates already-parsed YAML data; paths resolved against `base`."""
    if data is None:
        raise ConfigError([f"{name}: (top level): expected a mapping of settings, the file is empty"])
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: (top level): expected a mapping of settings, got {_got(data)}"])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(name, exc)) from None
    resolved = _resolve_paths(settings, base)
    assert isinstance(resolved, Settings)
    db_url = resolve_database_url(resolved.database.url, base)
    if db_url != resolved.database.url:
        resolved = resolved.model_copy(
            update={"database": resolved.database.model_copy(update={"url": db_url})}
        )
    resolved = _named_listeners(resolved)
    problems = _listener_problems(name, resolved)
    if check_files:
        problems += missing_files(name, resolved)
    if problems:
        raise ConfigError(problems)
    return resolved


def load_settings(path: str | Path, *, check_files: bool = False) -> Settings:
    """Reads and validates a settings file.

    Raises ConfigError (every problem, one line each). With `check_files`, the
    files the server reads at start-up (certificates, keys, lists) must exist.
    """
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}: cannot read: no such file"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{name}: cannot read: not UTF-8 text"]) from None
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror}"]) from None
    data = parse_yaml(text, name)
    settings = settings_from_data(data, name, path.resolve().parent, check_files=check_files)
    for line in deprecations(name, settings):
        log.warning("%s", line)
    return settings
