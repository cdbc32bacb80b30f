"""policy.flows.loader: every problem names the file, the line and the rule;
FlowMatrixHolder keeps the running matrix when a reload is refused."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
from flows_support import LISTENERS, req

from policy.flows import (
    FlowMatrixError,
    FlowMatrixHolder,
    FlowVerdict,
    load_matrix,
    parse_matrix,
)

HEAD = "version: 1\ndefault: deny\nrules:\n"


def problems(text: str, *, listeners: object = LISTENERS, name: str = "flows.yaml") -> list[str]:
    with pytest.raises(FlowMatrixError) as info:
        parse_matrix(textwrap.dedent(text), name, listeners=listeners)  # type: ignore[arg-type]
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


# (rules after HEAD, the one expected problem)
RULE_PROBLEMS = [
    # unknown keys, with a hint
    ("  - id: lab\n    form: {role: mx}\n    action: allow\n",
     "flows.yaml:5: rule lab: unknown key form (did you mean from?)"),
    ("  - id: lab\n    name: x\n    action: allow\n",
     "flows.yaml:5: rule lab: unknown key name (did you mean id?)"),
    ("  - id: lab\n    listener: submission\n    action: allow\n",
     "flows.yaml:5: rule lab: unknown key listener (it belongs under from:)"),
    ("  - id: lab\n    from: {local: true}\n    action: allow\n",
     "flows.yaml:5: rule lab: from: unknown key local (it belongs under to:)"),
    ("  - id: lab\n    to: {acount: x}\n    action: allow\n",
     "flows.yaml:5: rule lab: to: unknown key acount"),
    ("  - id: lab\n    from: {acount_class: staff}\n    action: allow\n",
     "flows.yaml:5: rule lab: from: unknown key acount_class (did you mean account_class?)"),
    # networks
    ("  - id: vpn\n    from:\n      network:\n        - 10.0.0.0/8\n        - 10.0.0.1/8\n"
     "    action: allow\n",
     "flows.yaml:8: rule vpn: from.network: bad CIDR '10.0.0.1/8': host bits set "
     "(did you mean 10.0.0.0/8?)"),
    ("  - id: vpn\n    from: {network: 10.0.0/33}\n    action: allow\n",
     "flows.yaml:5: rule vpn: from.network: bad CIDR '10.0.0/33': not an IPv4 or IPv6 network"),
    ("  - id: v6\n    from: {network: 'fe80::1/10'}\n    action: allow\n",
     "flows.yaml:5: rule v6: from.network: bad CIDR 'fe80::1/10': host bits set "
     "(did you mean fe80::/10?)"),
    # listeners: known to the settings, and SMTP ones
    ("  - id: l\n    from: {listener: smtp}\n    action: allow\n",
     "flows.yaml:5: rule l: from.listener: unknown listener 'smtp' (did you mean smtp-mx?); "
     "the settings define smtp-mx, submission, submissions, imap"),
    ("  - id: l\n    from: {listener: imap}\n    action: allow\n",
     "flows.yaml:5: rule l: from.listener: listener 'imap' is an imap listener; flows are "
     "decided on mx and submission listeners"),
    ("  - id: l\n    from: {listener: submission, role: mx}\n    action: allow\n",
     "flows.yaml:4: rule l: can never match: listener submission has role submission, "
     "the rule wants role mx"),
    # values
    ("  - id: r\n    from: {role: submision}\n    action: allow\n",
     "flows.yaml:5: rule r: from.role: expected one of mx, submission, got 'submision' "
     "(did you mean submission?)"),
    ("  - id: r\n    from: {method: [card, pasword]}\n    action: allow\n",
     "flows.yaml:5: rule r: from.method: expected one of card, org-certificate, password, "
     "password+totp, token, ldap, none, got 'pasword' (did you mean password?)"),
    ("  - id: r\n    to: {box_type: []}\n    action: allow\n",
     "flows.yaml:5: rule r: to.box_type: an empty list matches nothing; remove the key to "
     "match anything"),
    ("  - id: r\n    to: {local: 'yes please'}\n    action: allow\n",
     "flows.yaml:5: rule r: to.local: expected true or false, got 'yes please'"),
    ("  - id: r\n    from: {sender: '*@chu.fr'}\n    action: allow\n",
     "flows.yaml:5: rule r: from.sender: expected an address (labo@hopital.fr), a domain "
     "(hopital.fr) or a wildcard domain (*.chu.fr), or <> (the null sender), got '*@chu.fr' "
     "(did you mean chu.fr?)"),
    ("  - id: r\n    to: {recipient: '<>'}\n    action: allow\n",
     "flows.yaml:5: rule r: to.recipient: expected an address (labo@hopital.fr), a domain "
     "(hopital.fr) or a wildcard domain (*.chu.fr), got '<>'"),
    ("  - id: r\n    from: {peer_dn: mx.chu.fr}\n    action: allow\n",
     "flows.yaml:5: rule r: from.peer_dn: expected a certificate DN such as "
     "CN=mx.hopital.fr,OU=1750000001,O=Hopital,C=FR, got 'mx.chu.fr'"),
    ("  - id: r\n    max_size: lots\n    action: allow\n",
     "flows.yaml:5: rule r: max_size: expected a size in bytes such as 10485760, 10M or 512K, "
     "got 'lots'"),
    # actions and replies
    ("  - id: r\n    action: reject\n",
     "flows.yaml:5: rule r: action: expected one of allow, deny, tempfail, got 'reject' "
     "(did you mean deny?)"),
    ("  - id: r\n", "flows.yaml:4: rule r: required key action is missing (allow, deny or "
     "tempfail)"),
    ("  - id: r\n    action: deny\n    reply: 450 4.7.1 Later\n",
     'flows.yaml:6: rule r: reply: expected "5xx 5.x.x text" for deny, got code 450 '
     "(use action: tempfail for a 4xx reply)"),
    ("  - id: r\n    action: tempfail\n    reply: 550 5.7.1 No\n",
     'flows.yaml:6: rule r: reply: expected "4xx 4.x.x text" for tempfail, got code 550 '
     "(use action: deny for a 5xx reply)"),
    ("  - id: r\n    action: deny\n    reply: 550 4.7.1 No\n",
     'flows.yaml:6: rule r: reply: expected "5xx 5.x.x text" for deny: enhanced status 4.7.1 '
     "does not go with code 550"),
    ("  - id: r\n    action: deny\n    reply: 570 5.7.1 No\n",
     'flows.yaml:6: rule r: reply: expected "5xx 5.x.x text" for deny, got code 570 '
     "(SMTP codes are 50x to 55x)"),
    ("  - id: r\n    action: deny\n    reply: Relaying denied\n",
     'flows.yaml:6: rule r: reply: expected "5xx 5.x.x text" for deny (e.g. "550 5.7.1 '
     "Relaying denied\"), got 'Relaying denied'"),
    ("  - id: r\n    action: deny\n    reply: 550 5.7.1\n",
     'flows.yaml:6: rule r: reply: expected "5xx 5.x.x text" for deny (e.g. "550 5.7.1 '
     "Relaying denied\"), got '550 5.7.1'"),
    ("  - id: r\n    action: allow\n    reply: 250 2.0.0 Fine\n",
     "flows.yaml:6: rule r: reply: an allow rule sends no reply of its own; remove it"),
    # ids
    ("  - action: allow\n", "flows.yaml:4: rule #1: required key id is missing"),
    ("  - id: two words\n    action: allow\n",
     "flows.yaml:4: rule #1: id: expected letters, digits and . _ : - (at most 80, no "
     "spaces), got 'two words'"),
    ("  - id: default\n    action: allow\n",
     "flows.yaml:4: rule #1: id: 'default' names the default; choose another id"),
    ("  - 42\n", "flows.yaml:4: rule #1: expected a mapping (id, from, to, action, reply)"),
    ("  - id: r\n    from: [listener]\n    action: allow\n",
     "flows.yaml:5: rule r: from: expected a mapping of conditions, such as "
     "from: {listener: ...}"),
]


@pytest.mark.parametrize(("rules", "expected"), RULE_PROBLEMS)
def test_rule_problem(rules: str, expected: str) -> None:
    assert problems(HEAD + rules) == [expected]


def test_duplicate_id_names_both_lines() -> None:
    text = HEAD + ("  - id: out\n    to: {local: false}\n    action: allow\n"
                   "  - id: out\n    to: {local: true}\n    action: allow\n")
    assert problems(text) == ["flows.yaml:7: rule out: duplicate id (first at line 4)"]


def test_rules_after_a_catch_all_can_never_match() -> None:
    text = HEAD + ("  - id: local\n    to: {local: true}\n    action: allow\n"
                   "  - id: everything\n    description: stops here\n    action: deny\n"
                   "  - id: late\n    to: {local: false}\n    action: allow\n"
                   "  - id: later\n    from: {role: mx}\n    action: allow\n")
    assert problems(text) == [
        "flows.yaml:10: rule late: can never match: rule everything (line 7) before it "
        "matches every flow",
        "flows.yaml:13: rule later: can never match: rule everything (line 7) before it "
        "matches every flow",
    ]
    # as the last rule, a catch-all is fine (the default is then never used)
    parse_matrix(HEAD + "  - id: local\n    to: {local: true}\n    action: allow\n"
                 "  - id: rest\n    action: deny\n", "flows.yaml")


@pytest.mark.parametrize(("text", "expected"), [
    ("", ["f.yaml:1: the file is empty: expected version, default and rules"]),
    ("- a\n", ["f.yaml:1: expected a mapping with version, default and rules"]),
    ("version: 1\ndefault: deny\nrules:\n  - id: x\n    action: [allow\n",
     ["f.yaml:6: invalid YAML: did not find expected ',' or ']' (while parsing a flow "
      "sequence)"]),
    ("default: deny\ndefault: allow\nrules: []\n",
     ["f.yaml:2: duplicate key 'default' (first at line 1)"]),
    ("version: 2\ndefault: maybe\nflows: []\nrules: {}\n",
     ["f.yaml:1: version: expected 1, got 2",
      "f.yaml:2: default: expected one of allow, deny, tempfail, got 'maybe'",
      "f.yaml:3: unknown key flows (did you mean rules?)",
      "f.yaml:4: rules: expected a list of rules (- id: ...)"]),
    ("version: 1\nrules: []\n",
     ["f.yaml:1: required key default is missing (deny, or allow, when no rule matches)"]),
    ("version: 1\ndefault: deny\n",
     ["f.yaml:1: required key rules is missing (a list of rules; rules: [] when the default "
      "decides everything)"]),
    ("default: allow\ndefault_reply: 550 5.7.1 No\nrules: []\n",
     ["f.yaml:2: default_reply: an allowing default sends no reply; remove it"]),
    ("default: deny\ndefault_reply: 451 4.7.1 Later\nrules: []\n",
     ['f.yaml:2: default_reply: expected "5xx 5.x.x text" for deny, got code 451 '
      "(use action: tempfail for a 4xx reply)"]),
    ("default: deny\nid: x\nrules: []\n", ["f.yaml:2: unknown key id (it belongs under a rule)"]),
])
def test_file_problem(text: str, expected: list[str]) -> None:
    assert problems(text, name="f.yaml") == expected


@pytest.mark.parametrize(("text", "expected"), [
    # an unhashable key (a set) used to raise TypeError out of the loader
    ("version: 1\ndefault: deny\nrules:\n  - id: a\n    ? !!set {x}\n    : 1\n"
     "    action: allow\n", "f.yaml:5: a key must be plain text"),
    # an integer past Python's 4,300-digit limit used to raise ValueError
    ("version: " + "9" * 5000 + "\ndefault: deny\nrules: []\n", "f.yaml:1: invalid YAML value"),
    ("version: 1\ndefault: deny\nrules:\n  - id: a\n    max_size: '" + "9" * 5000 + "M'\n"
     "    action: allow\n", "f.yaml:5: rule a: max_size: expected a size"),
    # aliases: stringified in an error message, six levels of ten are a million elements
    ("a: &a [x, x]\nb: &b [*a, *a]\nversion: 1\ndefault: deny\nrules:\n  - id: r\n"
     "    action: *b\n", "f.yaml:2: aliases (*name) are not allowed in a flow matrix"),
    # PyYAML's parser is quadratic in flow nesting (5,000 levels took 12 s)
    ("version: 1\ndefault: deny\nrules: " + "[" * 5000 + "]" * 5000 + "\n",
     "f.yaml:3: nesting deeper than 32 levels"),
])
def test_hostile_yaml_is_a_problem_not_a_crash(text: str, expected: str) -> None:
    found = problems(text, name="f.yaml")
    assert len(found) == 1 and found[0].startswith(expected), found


def test_every_problem_is_reported_in_line_order() -> None:
    text = HEAD + ("  - id: a\n    from: {role: submision}\n    action: allow\n"
                   "  - id: b\n    action: reject\n"
                   "  - id: a\n    action: deny\n    reply: 250 2.0.0 x\n")
    assert problems(text) == [
        "flows.yaml:5: rule a: from.role: expected one of mx, submission, got 'submision' "
        "(did you mean submission?)",
        "flows.yaml:8: rule b: action: expected one of allow, deny, tempfail, got 'reject' "
        "(did you mean deny?)",
        "flows.yaml:9: rule a: duplicate id (first at line 4)",
        'flows.yaml:11: rule a: reply: expected "5xx 5.x.x text" for deny, got code 250',
    ]


def test_listener_names_are_checked_only_with_settings() -> None:
    text = HEAD + "  - id: l\n    from: {listener: anything}\n    action: allow\n"
    assert parse_matrix(text, "f.yaml", listeners=None).rules[0].id == "l"


def test_load_matrix_problems_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FlowMatrixError) as info:
        load_matrix(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read: no such file"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"default: deny\nrules: []\n\xff\n")
    with pytest.raises(FlowMatrixError) as info:
        load_matrix(bad)
    assert str(info.value) == f"{bad}: cannot read: not UTF-8 text"
    bad.write_text(HEAD + "  - id: r\n    action: nope\n")
    with pytest.raises(FlowMatrixError) as info:
        load_matrix(bad)
    assert str(info.value).startswith(f"{bad}:5: rule r: action: ")


def test_the_checksum_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(HEAD + "  - id: r\n    action: allow\n")
    m = load_matrix(path)
    assert m.checksum == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert m.source == str(path)


# ---------------------------------------------------------------- holder


ALLOW_ALL = HEAD + "  - id: everything\n    action: allow\n"
DENY_ALL = "version: 1\ndefault: deny\nrules: []\n"


def test_holder_reload_swaps_a_valid_matrix(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(DENY_ALL)
    holder = FlowMatrixHolder.load(path, LISTENERS)
    first = holder.matrix
    assert holder.decide(req()).verdict is FlowVerdict.DENY

    path.write_text(ALLOW_ALL)
    result = holder.reload()
    assert result.ok and result.changed and result.problems == ()
    assert (result.rules, result.default) == (1, FlowVerdict.DENY)
    assert result.checksum == result.file_checksum == (
        "sha256:" + hashlib.sha256(ALLOW_ALL.encode()).hexdigest())
    assert result.previous_checksum == first.checksum
    assert holder.matrix is not first
    assert holder.decide(req()).rule == "everything"
    assert holder.explain(req()).rule == "everything"
    assert result.summary() == (f"{path}: reloaded: 1 rules, default deny, checksum "
                                f"{result.checksum}")

    again = holder.reload()
    assert again.ok and not again.changed
    assert again.summary().startswith(f"{path}: unchanged: ")


def test_holder_keeps_the_running_matrix_when_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(ALLOW_ALL)
    holder = FlowMatrixHolder.load(path, LISTENERS)
    running = holder.matrix
    broken = HEAD + "  - id: r\n    from: {listener: nowhere}\n    action: allow\n"
    path.write_text(broken)
    result = holder.reload()
    assert not result.ok and not result.changed
    assert holder.matrix is running
    assert holder.decide(req()).rule == "everything"
    assert result.checksum == result.previous_checksum == running.checksum
    assert result.file_checksum == "sha256:" + hashlib.sha256(broken.encode()).hexdigest()
    assert [str(p) for p in result.problems] == [
        f"{path}:5: rule r: from.listener: unknown listener 'nowhere'; the settings define "
        "smtp-mx, submission, submissions, imap"]
    assert result.summary() == (f"{path}: refused (1 problem); still running 1 rules, "
                                f"checksum {running.checksum}")

    path.unlink()
    gone = holder.reload()
    assert not gone.ok and gone.file_checksum is None and holder.matrix is running
    assert [str(p) for p in gone.problems] == [f"{path}: cannot read: no such file"]


def test_holder_reload_from_another_path_then_follows_it(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(DENY_ALL)
    b.write_text(ALLOW_ALL)
    holder = FlowMatrixHolder.load(a)
    assert holder.reload(b).ok and holder.path == b
    b.write_text(DENY_ALL)
    assert holder.reload().ok and holder.decide(req()).rule == "default"


def test_holder_first_load_raises(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text("default: deny\n")
    with pytest.raises(FlowMatrixError):
        FlowMatrixHolder.load(path)


def test_the_readme_example_loads() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("## Flow matrix", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    m = parse_matrix(example, "README.md", listeners=LISTENERS)
    assert [r.id for r in m.rules] == ["lab-results-stay-inside", "vpn-clients-to-trust-space"]
