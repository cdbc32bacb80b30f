"""`mssctl policy check|explain` on an `mssctl init --demo` instance, run as a
user would (exit codes, output)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from mssctl_support import mssctl_inprocess as mssctl

REPO = Path(__file__).resolve().parents[2]
D = "hopital.test"
PEER_DN = ("CN=mx.operateur-pair.test,OU=1690000002,O=Operateur pair de demonstration,"
           "ST=Rhone (69),C=FR")




@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("policy-template") / "inst"
    code, _, err = mssctl("init", str(target), "--demo")
    assert code == 0, err
    return target


@pytest.fixture
def inst(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "inst"
    shutil.copytree(template, copy)
    monkeypatch.delenv("MSS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./mss.yaml here
    return copy


def cfg(inst: Path) -> str:
    return str(inst / "mss.yaml")


def write(path: Path, rules: str, default: str = "deny") -> Path:
    path.write_text(f"version: 1\ndefault: {default}\nrules:\n{rules}", encoding="utf-8")
    return path


# ---------------------------------------------------------------- check


def test_init_writes_the_shipped_matrix(inst: Path) -> None:
    assert (inst / "flows.yaml").read_bytes() == (REPO / "conf/defaults/flows.yaml").read_bytes()


def test_check_the_configured_matrix(inst: Path) -> None:
    code, out, err = mssctl("policy", "check", "-c", cfg(inst))
    digest = hashlib.sha256((inst / "flows.yaml").read_bytes()).hexdigest()
    assert (code, err) == (0, "")
    assert out == f"{inst / 'flows.yaml'}: 8 rules, default deny, checksum sha256:{digest}\n"


def test_check_prints_every_problem_with_file_line_and_rule(inst: Path) -> None:
    bad = write(inst / "bad.yaml",
                "  - id: vpn\n    from: {network: 10.0.0.1/8, listener: smtp}\n"
                "    action: allow\n"
                "  - id: vpn\n    action: deny\n    reply: 451 4.7.1 Later\n")
    code, out, err = mssctl("policy", "check", str(bad), "-c", cfg(inst))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{bad}:5: rule vpn: from.network: bad CIDR '10.0.0.1/8': host bits set "
        "(did you mean 10.0.0.0/8?)",
        f"{bad}:5: rule vpn: from.listener: unknown listener 'smtp' (did you mean smtp-mx?); "
        "the settings define smtp-mx, submission, submissions, imap, imaps",
        f"{bad}:7: rule vpn: duplicate id (first at line 4)",
        f'{bad}:9: rule vpn: reply: expected "5xx 5.x.x text" for deny, got code 451 '
        "(use action: tempfail for a 4xx reply)",
    ]


def test_check_a_file_without_settings_skips_listener_names(inst: Path) -> None:
    f = write(inst / "other.yaml",
              "  - id: l\n    from: {listener: anything}\n    action: allow\n", "allow")
    code, out, err = mssctl("policy", "check", str(f))
    assert (code, err) == (0, "")
    assert out.startswith(f"{f}: 1 rule, default allow, checksum sha256:")
    assert out.endswith(" (listener names not checked: no settings file)\n")
    code, _, err = mssctl("policy", "check", str(f), "-c", cfg(inst))
    assert code == 2 and "unknown listener 'anything'" in err


def test_check_needs_a_file(inst: Path) -> None:
    code, _, err = mssctl("policy", "check", str(inst / "missing.yaml"), "-c", cfg(inst))
    assert (code, err) == (2, f"{inst / 'missing.yaml'}: cannot read: no such file\n")
    text = (inst / "mss.yaml").read_text().replace("  flows_file: flows.yaml\n", "")
    (inst / "mss.yaml").write_text(text)
    code, _, err = mssctl("policy", "check", "-c", cfg(inst))
    assert code == 2
    assert err == f"mssctl: policy.flows_file is not set in {cfg(inst)}; name the matrix file\n"


def test_check_reports_a_broken_settings_file(inst: Path) -> None:
    (inst / "mss.yaml").write_text("domains: [x]\nlistners: []\n")
    code, _, err = mssctl("policy", "check", "-c", cfg(inst))
    assert code == 2 and "listners: unknown key (did you mean listeners?)" in err


# ---------------------------------------------------------------- explain


def test_explain_a_refused_recipient(inst: Path) -> None:
    code, out, err = mssctl("policy", "explain", "-c", cfg(inst), "--from", f"dr.martin@{D}",
                            "--to", f"nobody@{D}", "--as", f"dr.martin@{D}", "--ip", "10.0.0.9")
    assert (code, err) == (0, "")
    flows = inst / "flows.yaml"
    lines = out.splitlines()
    assert lines[:3] == [
        "decision   deny: 550 5.1.1 No such recipient",
        f"rule       unknown-recipient ({flows}:87)",
        f"matrix     {flows}: 8 rules, default deny, checksum sha256:"
        + hashlib.sha256(flows.read_bytes()).hexdigest(),
    ]
    assert lines[3:] == [
        "facts:",
        "  listener   submission (role submission), client 10.0.0.9",
        f"  account    dr.martin@{D} (practitioner, card, assumed from the class: use --method)",
        f"  sender     dr.martin@{D} (local, box PER)",
        f"  recipient  nobody@{D} (local, whitelisted: yes, box missing)",
        "  size       unknown",
    ]


def test_explain_verbose_lists_each_rule_tried_and_why(inst: Path) -> None:
    code, out, _ = mssctl("policy", "explain", "-c", cfg(inst), "--from", "a@operateur-pair.test",
                          "--to", "b@gmail.test", "-v")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "decision   deny: 550 5.7.1 Relaying denied"
    assert lines[lines.index("rules tried, in order:") + 1:] == [
        "  submission-needs-login (line 75): from.role wants submission, got mx",
        "  mx-refuses-our-domains (line 81): from.sender_local wants true, got false",
        "  unknown-recipient (line 87): to.local wants true, got false; to.box_state wants "
        "missing, got remote recipient",
        "  disabled-recipient (line 92): to.local wants true, got false; to.box_state wants "
        "disabled, got remote recipient",
        "  deliver-local (line 98): to.local wants true, got false",
        "  no-relay-for-operators (line 103): matched",
    ]
    assert "  listener   smtp-mx (role mx), client unknown" in lines
    assert "  peer       no certificate (whitelisted for the sender's domain: no)" in lines
    # without -v: the decision and the facts only
    _, short, _ = mssctl("policy", "explain", "-c", cfg(inst), "--from", "a@operateur-pair.test",
                         "--to", "b@gmail.test")
    assert "rules tried" not in short and short.splitlines() == lines[:lines.index(
        "rules tried, in order:")]


def test_explain_with_another_matrix_the_peer_and_the_default(inst: Path) -> None:
    f = write(inst / "strict.yaml",
              "  - id: operators-must-be-listed\n"
              "    from: {role: mx, peer_whitelisted: false}\n"
              "    action: deny\n"
              '    reply: "550 5.7.1 Operator not in the trust space for this domain"\n'
              "  - id: big-only-from-labs\n    max_size: 1M\n    to: {local: true}\n"
              "    action: allow\n")
    base = ("policy", "explain", "-c", cfg(inst), "--flows", str(f), "--from",
            "a@operateur-pair.test", "--to", f"cardiologie@{D}")
    code, out, _ = mssctl(*base, "--peer-dn", "CN=mx.inconnu.test,C=FR")
    assert code == 0
    assert out.splitlines()[:2] == [
        "decision   deny: 550 5.7.1 Operator not in the trust space for this domain",
        f"rule       operators-must-be-listed ({f}:4)"]
    assert ("  peer       CN=mx.inconnu.test,C=FR (whitelisted for the sender's domain: no)"
            in out.splitlines())

    code, out, _ = mssctl(*base, "--peer-dn", PEER_DN)
    lines = out.splitlines()
    assert lines[:2] == ["decision   allow", f"rule       big-only-from-labs ({f}:8)"]
    assert ("note       the size is not known: this rule holds up to its max_size "
            "(give --size)") in lines
    assert f"  peer       {PEER_DN} (whitelisted for the sender's domain: yes)" in lines

    code, out, _ = mssctl(*base, "--peer-dn", PEER_DN, "--size", "2M", "-v")
    lines = out.splitlines()
    assert lines[:2] == ["decision   deny: 550 5.7.1 Flow not allowed",
                         f"rule       default (no rule matched; {f}:2)"]
    assert "  size       2097152 bytes" in lines
    assert lines[-3:] == [
        "  operators-must-be-listed (line 4): from.peer_whitelisted wants false, got true",
        "  big-only-from-labs (line 8): max_size wants at most 1048576 bytes, got 2097152 bytes",
        "  default (line 2): no rule matched",
    ]


def test_explain_method_and_listener(inst: Path) -> None:
    code, out, _ = mssctl("policy", "explain", "-c", cfg(inst), "--from", f"sec.durand@{D}",
                          "--to", "x@operateur-pair.test", "--as", f"sec.durand@{D}",
                          "--method", "password+totp", "--listener", "submissions")
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == ["decision   allow",
                         f"rule       relay-to-trust-space ({inst / 'flows.yaml'}:114)"]
    assert "  listener   submissions (role submission), client unknown" in lines
    assert f"  account    sec.durand@{D} (staff, password+totp)" in lines
    assert "  recipient  x@operateur-pair.test (remote, whitelisted: yes)" in lines
    _, out, _ = mssctl("policy", "explain", "-c", cfg(inst), "--from", "", "--to",
                       "postmaster")
    assert out.splitlines()[0] == "decision   allow"
    assert "  sender     <> (null sender)" in out.splitlines()
    assert f"  recipient  postmaster@{D} (local, whitelisted: yes, box ORG active)" in (
        out.splitlines())


@pytest.mark.parametrize(("args", "code", "message"), [
    (("--as", f"ghost@{D}"), 1, f"mssctl: --as ghost@{D}: not found: ghost@{D}\n"),
    (("--method", "card"), 2, "mssctl: --method goes with --as ACCOUNT\n"),
    (("--ip", "10.0.0.300"), 2, "mssctl: --ip: expected an IPv4 or IPv6 address, "
     "got '10.0.0.300'\n"),
    (("--listener", "imaps"), 2, "mssctl: --listener: 'imaps' is an imap listener; flows are "
     "decided on mx and submission listeners\n"),
    (("--listener", "smtp"), 2, "mssctl: --listener: unknown listener 'smtp'; the settings "
     "define smtp-mx, submission, submissions, imap, imaps\n"),
])
def test_explain_usage_errors(inst: Path, args: tuple[str, ...], code: int,
                              message: str) -> None:
    got = mssctl("policy", "explain", "-c", cfg(inst), "--from", f"dr.martin@{D}", "--to",
                 f"cardiologie@{D}", *args)
    assert got == (code, "", message)


def test_explain_with_a_broken_matrix_prints_its_problems(inst: Path) -> None:
    f = write(inst / "bad.yaml", "  - id: x\n    action: maybe\n")
    code, out, err = mssctl("policy", "explain", "-c", cfg(inst), "--flows", str(f), "--from",
                            "a@b.test", "--to", f"x@{D}")
    assert (code, out) == (2, "")
    assert err == (f"{f}:5: rule x: action: expected one of allow, deny, tempfail, "
                   "got 'maybe'\n")


def test_explain_bad_size_is_a_usage_error(inst: Path) -> None:
    code, _, err = mssctl("policy", "explain", "-c", cfg(inst), "--from", "a@b.test", "--to",
                          f"x@{D}", "--size", "big")
    assert code == 2 and "expected a size such as 10485760, 10M or 512K, got 'big'" in err
