"""conf.loader: YAML -> Settings, and one precise line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from conf.loader import ConfigError, load_settings, resolve_database_url
from conf.settings import ClientCertMode, ListenerRole, Settings, TLSMode

GOOD = """\
hostname: mx.hopital.test
domains: [hopital.test]
listeners:
  - {name: smtp-mx, port: 2525, role: mx}
  - {name: imaps, port: 1993, role: imap, tls: implicit, client_cert: required}
database:
  url: sqlite:///mss.db
tls:
  cert_file: pki/server.pem
  key_file: pki/server.key
  ca_files: [pki/ca.pem]
  crl_files: [/abs/crl.pem]
audit:
  path: audit.log
policy:
  whitelist_file: whitelist.xml
key_file: keys
"""


def write(tmp_path: Path, text: str, name: str = "mss.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    # The message is the lines, nothing else.
    assert str(info.value) == "\n".join(info.value.lines)
    return info.value.lines


def test_good_file_loads_with_paths_resolved_against_its_directory(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    settings = load_settings(write(conf_dir, GOOD))
    assert isinstance(settings, Settings)
    assert settings.tls.cert_file == conf_dir.resolve() / "pki" / "server.pem"
    assert settings.tls.ca_files == [conf_dir.resolve() / "pki" / "ca.pem"]
    assert settings.tls.crl_files == [Path("/abs/crl.pem")]
    assert settings.audit.path == conf_dir.resolve() / "audit.log"
    assert settings.key_file == conf_dir.resolve() / "keys"
    assert settings.policy.whitelist_file == conf_dir.resolve() / "whitelist.xml"
    assert settings.policy.flows_file is None
    assert settings.database.url == f"sqlite:///{conf_dir.resolve() / 'mss.db'}"
    assert settings.listeners[1].role is ListenerRole.IMAP
    assert settings.listeners[1].tls is TLSMode.IMPLICIT
    assert settings.listeners[1].client_cert is ClientCertMode.REQUIRED
    assert settings.limits.message_size == 10 * 1024 * 1024  # default kept


def test_loading_from_another_working_directory_gives_the_same_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = Path("..") / "mss.yaml"
    assert load_settings(relative) == load_settings(path)


def test_unnamed_listeners_get_a_name(tmp_path: Path) -> None:
    text = GOOD.replace("{name: smtp-mx, port: 2525, role: mx}", "{port: 2525, role: mx}")
    settings = load_settings(write(tmp_path, text))
    assert settings.listeners[0].name == "mx-2525"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///mss.db", "sqlite:////base/mss.db"),
        ("sqlite:///data/mss.db?timeout=5", "sqlite:////base/data/mss.db?timeout=5"),
        ("sqlite:////var/lib/mss.db", "sqlite:////var/lib/mss.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql+psycopg2://mss@db/mss", "postgresql+psycopg2://mss@db/mss"),
    ],
)
def test_database_url_resolution(url: str, expected: str) -> None:
    assert resolve_database_url(url, Path("/base")) == expected


# (what to change in GOOD, the exact line expected after "mss.yaml: ")
WRONG_VALUES = [
    ("port: 2525", "port: abc",
     "listeners.0.port: expected an integer from 0 to 65535, got 'abc'"),
    ("port: 2525", "port: 70000",
     "listeners.0.port: expected an integer from 0 to 65535, got 70000"),
    ("port: 1993", "port: -1",
     "listeners.1.port: expected an integer from 0 to 65535, got -1"),
    ("role: mx", "role: smtp",
     "listeners.0.role: expected one of mx, submission, imap, autoconfig, got 'smtp'"),
    ("tls: implicit", "tls: ssl",
     "listeners.1.tls: expected one of none, starttls, implicit, got 'ssl'"),
    ("client_cert: required", "client_cert: yes",
     "listeners.1.client_cert: expected one of none, optional, required, got True"),
    ("audit:\n  path: audit.log", "audit:\n  path: audit.log\n  retention_days: 0",
     "audit.retention_days: expected an integer >= 1, got 0"),
    ("key_file: keys", "key_file: keys\nlimits: {message_size: 10.5}",
     "limits.message_size: expected an integer >= 1024, got 10.5"),
    ("key_file: keys", "key_file: keys\nlimits: {smtp_idle_timeout: 0}",
     "limits.smtp_idle_timeout: expected a number > 0, got 0"),
    ("key_file: keys", "key_file: keys\nlimits: {bare_line_endings: strip}",
     "limits.bare_line_endings: expected one of reject, normalise, got 'strip'"),
    ("key_file: keys", "key_file: keys\nworkers: 100",
     "workers: expected an integer from 1 to 64, got 100"),
    ("whitelist_file: whitelist.xml", "whitelist_file: whitelist.xml\n  enforce_whitelist: maybe",
     "policy.enforce_whitelist: expected true or false, got 'maybe'"),
    ("key_file: keys", "key_file: keys\nqueue: {routes: {other.test: 25}}",
     "queue.routes.other.test: expected a string, got 25"),
    ("key_file: keys", "key_file: keys\nqueue: {routes: [a, b]}",
     "queue.routes: expected a mapping, got a list"),
    ("url: sqlite:///mss.db", "url: 42", "database.url: expected a string, got 42"),
    ("url: sqlite:///mss.db", "url: sqlite:///mss.db\n  threads: many",
     "database.threads: expected an integer from 1 to 256, got 'many'"),
    ("domains: [hopital.test]", "domains: []",
     "domains: expected a list of at least 1 item, got 0"),
    ("domains: [hopital.test]", "domains: hopital.test",
     "domains: expected a list of at least 1 item, got 'hopital.test'"),
    ("ca_files: [pki/ca.pem]", "ca_files: [[x]]",
     "tls.ca_files.0: expected a file path, got a list"),
    ("key_file: pki/server.key", "key_file: pki/server.key\n  min_version: TLSv1.1",
     "tls.min_version: expected TLSv1.2 or TLSv1.3, got 'TLSv1.1'"),
    ("audit:\n  path: audit.log", "audit: audit.log",
     "audit: expected a mapping, got 'audit.log'"),
]


@pytest.mark.parametrize(("old", "new", "line"), WRONG_VALUES)
def test_wrong_value_gives_one_precise_line(tmp_path: Path, old: str, new: str, line: str) -> None:
    assert old in GOOD
    assert problems(tmp_path, GOOD.replace(old, new, 1)) == [f"{tmp_path / 'mss.yaml'}: {line}"]


UNKNOWN_KEYS = [
    ("key_file: keys", "key_file: keys\nlimits: {mesage_size: 1}",
     "limits.mesage_size: unknown key (did you mean message_size?)"),
    ("hostname:", "hostnme:", "hostnme: unknown key (did you mean hostname?)"),
    ("role: mx}", "role: mx, tsl: none}",
     "listeners.0.tsl: unknown key (did you mean tls?)"),
    ("key_file: keys", "key_file: keys\ncolour: blue", "colour: unknown key"),
    ("url: sqlite:///mss.db", "url: sqlite:///mss.db\n  pool: 3",
     "database.pool: unknown key (did you mean pool_size?)"),
]


@pytest.mark.parametrize(("old", "new", "line"), UNKNOWN_KEYS)
def test_unknown_key_is_named_with_a_suggestion(
    tmp_path: Path, old: str, new: str, line: str
) -> None:
    lines = problems(tmp_path, GOOD.replace(old, new, 1))
    assert f"{tmp_path / 'mss.yaml'}: {line}" in lines


def test_missing_required_keys(tmp_path: Path) -> None:
    text = GOOD.replace("key_file: keys\n", "").replace("audit:\n  path: audit.log\n", "")
    lines = problems(tmp_path, text)
    name = tmp_path / "mss.yaml"
    assert lines == [
        f"{name}: audit: required key is missing (expected a mapping)",
        f"{name}: key_file: required key is missing (expected a file path)",
    ]


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = (GOOD.replace("port: 2525", "port: abc")
                .replace("role: imap", "role: pop3")
                .replace("key_file: keys", "key_file: keys\nlimits: {mesage_size: 1}"))
    lines = problems(tmp_path, text)
    assert len(lines) == 3
    assert [ln.split(": ")[1] for ln in lines] == [
        "listeners.0.port", "listeners.1.role", "limits.mesage_size",
    ]


def test_duplicate_listener_ports_and_names(tmp_path: Path) -> None:
    text = GOOD.replace("{name: imaps, port: 1993", "{name: smtp-mx, port: 2525")
    lines = problems(tmp_path, text)
    name = tmp_path / "mss.yaml"
    assert lines == [
        f"{name}: listeners.1.name: expected a unique name, 'smtp-mx' is also listeners.0",
        f"{name}: listeners.1.port: expected a free address, 127.0.0.1:2525 is also listeners.0",
    ]


def test_port_zero_may_repeat(tmp_path: Path) -> None:
    text = GOOD.replace("port: 2525", "port: 0").replace("port: 1993", "port: 0")
    assert [lst.port for lst in load_settings(write(tmp_path, text)).listeners] == [0, 0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("domains: [a\nlisteners: []\n", "line 2, column 10: invalid YAML"),
        ("a: b: c\n", "line 1, column 5: invalid YAML: mapping values are not allowed here"),
        ("key: 'unterminated\n", "invalid YAML"),
        ("\tdomains: x\n", "line 1, column 1: invalid YAML"),
    ],
)
def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    lines = problems(tmp_path, text)
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'mss.yaml'}: ")
    assert expected in lines[0]


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    lines = problems(tmp_path, GOOD + "key_file: other\n")
    assert lines == [
        f"{tmp_path / 'mss.yaml'}: line {GOOD.count(chr(10)) + 1}: duplicate key 'key_file' "
        f"(first at line {GOOD.count(chr(10))})"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "(top level): expected a mapping of settings, the file is empty"),
        ("# only a comment\n", "(top level): expected a mapping of settings, the file is empty"),
        ("- a\n- b\n", "(top level): expected a mapping of settings, got a list"),
        ("just text\n", "(top level): expected a mapping of settings, got 'just text'"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [f"{tmp_path / 'mss.yaml'}: {expected}"]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml")
    assert info.value.lines == [f"{tmp_path / 'nope.yaml'}: cannot read: no such file"]
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"hostname: h\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    assert info.value.lines == [f"{bad}: cannot read: not UTF-8 text"]


def test_check_files_names_every_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "server.pem").write_text("x")
    (tmp_path / "keys").write_text("x")
    load_settings(path)  # types are fine
    with pytest.raises(ConfigError) as info:
        load_settings(path, check_files=True)
    keys = [line.split(": ")[1] for line in info.value.lines]
    assert keys == ["tls.key_file", "tls.ca_files.0", "tls.crl_files.0", "policy.whitelist_file"]
    assert all("expected an existing file" in line for line in info.value.lines)


def test_no_traceback_text_or_pydantic_urls_in_messages(tmp_path: Path) -> None:
    text = GOOD.replace("port: 2525", "port: abc").replace("hostname:", "hostnme:")
    message = "\n".join(problems(tmp_path, text))
    assert "Traceback" not in message
    assert "pydantic" not in message
    assert "https://" not in message
