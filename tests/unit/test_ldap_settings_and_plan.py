"""The `ldap:` settings (errors naming the key) and the pure parts of the
directory sync: AD's userAccountControl, DN comparison, class mapping, and
the plan's rules on what it never touches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conf.loader import ConfigError, settings_from_data
from conf.settings import LdapSettings
from policy.ldapdir import Entry
from policy.ldapsync import (
    EmptyDirectory,
    Existing,
    Group,
    Person,
    Snapshot,
    is_disabled,
    normalise_dn,
    person_from,
    plan_changes,
)
from storage.interface import Account, AccountClass, Grant, Mailbox, MailboxType

BASE_SETTINGS: dict[str, Any] = {
    "domains": ["hopital.test"],
    "listeners": [{"port": 0, "role": "imap", "tls": "none"}],
    "database": {"url": "sqlite:///mss.db"},
    "tls": {"cert_file": "s.pem", "key_file": "s.key"},
    "audit": {"path": "audit.log"},
    "key_file": "keys",
}
LDAP: dict[str, Any] = {
    "urls": ["ldaps://ldap.hopital.test"],
    "bind_dn": "cn=sync,dc=hopital,dc=test",
    "bind_password_file": "ldap-password",
    "people": {"base_dn": "ou=people,dc=hopital,dc=test"},
}


def problems(**changes: Any) -> list[str]:
    data = dict(BASE_SETTINGS)
    data.update(changes)
    try:
        settings_from_data(data, "mss.yaml", Path("/srv/mss"))
    except ConfigError as exc:
        return exc.lines
    return []


def test_a_good_section_loads_with_paths_resolved() -> None:
    data = dict(BASE_SETTINGS, ldap=LDAP)
    settings = settings_from_data(data, "mss.yaml", Path("/srv/mss"))
    assert settings.ldap is not None
    assert settings.ldap.bind_password_file == Path("/srv/mss/ldap-password")
    assert settings.ldap.sync_interval == 900


@pytest.mark.parametrize(("ldap", "expected"), [
    ({**LDAP, "urls": ["http://x"]},
     "mss.yaml: ldap.urls: expected ldap:// or ldaps:// URLs, got 'http://x'"),
    ({**LDAP, "urls": []}, "mss.yaml: ldap.urls: "),
    ({**LDAP, "bind_dn": None}, "bind: simple needs bind_dn and bind_password_file"),
    ({**LDAP, "bind": "sasl-external"},
     "bind: sasl-external needs client_cert_file and client_key_file"),
    ({**LDAP, "start_tls": True}, "start_tls is for ldap:// URLs"),
    ({**LDAP, "default_class": "staf"},
     "mss.yaml: ldap.default_class: unknown account class 'staf' (did you mean staff?)"),
    ({**LDAP, "class_map": {"medecin": "doctor"}}, "mss.yaml: ldap.class_map: unknown account"),
    ({**LDAP, "people": {"base_dn": "ou=p", "filter": "objectClass=person"}},
     "mss.yaml: ldap.people.filter: expected an LDAP filter in parentheses"),
    ({**LDAP, "grants": [{"group": "g", "mailbox": "svc@hopital.test"}]},
     "grants need groups"),
    ({**LDAP, "groups": {"base_dn": "ou=g"},
      "grants": [{"group": "g", "mailbox": "svc@hopital.test", "rights": "lrz"}]},
     "mss.yaml: ldap.grants.0.rights: expected RFC 4314 rights among lrswipkxtea, got 'z'"),
    ({**LDAP, "timeout": 0}, "mss.yaml: ldap.timeout: "),
    ({**LDAP, "urls": ["ldap://ldap.hopital.test"]},
     "bind: simple would send the password in clear to ldap://ldap.hopital.test: use "
     "ldaps:// or start_tls"),
    ({**LDAP, "bind_pasword_file": "x"}, "mss.yaml: ldap.bind_pasword_file: "),
])
def test_bad_sections_name_the_key(ldap: dict[str, Any], expected: str) -> None:
    found = problems(ldap=ldap)
    assert any(expected in line for line in found), found


def test_the_ldap_method_needs_the_section() -> None:
    found = problems(policy={"login_methods": {"staff": ["ldap"]}})
    assert any("policy.login_methods.staff allows ldap, but no ldap section" in x
               for x in found), found
    assert problems(ldap=LDAP, policy={"login_methods": {"staff": ["ldap"]}}) == []
    anonymous = {**LDAP, "bind": "anonymous", "urls": ["ldap://ldap.hopital.test:389"]}
    assert problems(ldap=anonymous) == []
    found = problems(ldap=anonymous, policy={"login_methods": {"staff": ["ldap"]}})
    assert any("policy.login_methods.staff allows ldap, which would send passwords in clear "
               "to ldap://ldap.hopital.test:389: use ldaps:// or ldap.start_tls" in x
               for x in found), found
    for safe in ({**anonymous, "start_tls": True}, {**anonymous, "urls": ["ldap://[::1]:389"]}):
        assert problems(ldap=safe, policy={"login_methods": {"staff": ["ldap"]}}) == []


@pytest.mark.parametrize(("attribute", "value", "disabled"), [
    ("userAccountControl", "512", False),  # NORMAL_ACCOUNT
    ("userAccountControl", "514", True),  # + ACCOUNTDISABLE
    ("useraccountcontrol", "66050", True),  # + DONT_EXPIRE_PASSWORD
    ("userAccountControl", "66048", False),
    ("userAccountControl", "0x202", True),
    ("userAccountControl", "garbage", False),
    ("nsAccountLock", "TRUE", True),
    ("nsAccountLock", "false", False),
    ("description", "yes", True),
    (None, "TRUE", False),
    ("nsAccountLock", None, False),
])
def test_disabled_flag(attribute: str | None, value: str | None, disabled: bool) -> None:
    assert is_disabled(attribute, value) is disabled


def test_dn_comparison() -> None:
    assert normalise_dn("UID=Agent1, OU=People ,dc=Hopital,dc=test") == \
        "uid=agent1,ou=people,dc=hopital,dc=test"
    assert normalise_dn(r"cn=Martin\, Anne,ou=p") == r"cn=martin\, anne,ou=p"
    assert normalise_dn("cn=a + sn=b,ou=p") == "cn=a+sn=b,ou=p"


def settings(**extra: Any) -> LdapSettings:
    values: dict[str, Any] = {**LDAP, "bind_password_file": "/x",
                              "attributes": {"idnat": "employeeNumber",
                                             "account_class": "employeeType",
                                             "disabled": "userAccountControl"},
                              "class_map": {"Medecin": "practitioner"}}
    values.update(extra)
    return LdapSettings.model_validate(values)


def test_person_mapping() -> None:
    entry = Entry("uid=a,ou=p", {"mail": ["A@Hopital.test"], "cn": ["Anne A"],
                                 "employeeNumber": ["810000000001"],
                                 "employeeType": ["MEDECIN"], "userAccountControl": ["514"]})
    assert person_from(entry, settings()) == Person(
        "uid=a,ou=p", "a@hopital.test", "a@hopital.test", "810000000001", "Anne A",
        "practitioner", True)
    assert person_from(Entry("uid=b,ou=p", {"cn": ["B"]}), settings()) == \
        "uid=b,ou=p: no mail: skipped"
    other = person_from(Entry("uid=c,ou=p", {"mail": ["c@hopital.test"],
                                             "employeeType": ["cadre"]}), settings())
    assert isinstance(other, Person) and other.account_class == "staff"


def account(i: int, login: str, *, dn: str | None = None, active: bool = True,
            directory_disabled: bool = False) -> Account:
    return Account(i, login, login, AccountClass.STAFF, active, directory_dn=dn,
                   directory_disabled=directory_disabled)


def person(login: str, dn: str, *, disabled: bool = False) -> Person:
    return Person(dn, login, None, None, login, "staff", disabled)


def mailbox(i: int, address: str) -> Mailbox:
    return Mailbox(i, address, MailboxType.ORG, "", None, "", None, True)


def test_empty_directory_with_synced_accounts_is_refused() -> None:
    existing = Existing([account(1, "a@hopital.test", dn="uid=a,ou=p")], [], [],
                        frozenset({"hopital.test"}))
    with pytest.raises(EmptyDirectory):
        plan_changes(Snapshot([], []), existing, settings())
    # With no synced account yet, an empty directory is simply nothing to do.
    assert plan_changes(Snapshot([], []), Existing([], [], [], frozenset()), settings()) == (
        [], [])


def test_grants_the_sync_does_not_own_are_left_alone() -> None:
    s = settings(groups={"base_dn": "ou=g"},
                 grants=[{"group": "svc", "mailbox": "svc@hopital.test", "rights": "lr"}])
    a = account(1, "a@hopital.test", dn="uid=a,ou=p")
    b = account(2, "b@hopital.test", dn="uid=b,ou=p")
    grants = [Grant(1, 1, 9, "lrswipkxtea", managed_by=None),  # an admin's, wider
              Grant(2, 2, 9, "lr", managed_by="ldap")]
    existing = Existing([a, b], [mailbox(9, "svc@hopital.test")], grants,
                        frozenset({"hopital.test"}))
    snapshot = Snapshot([person("a@hopital.test", "uid=a,ou=p"),
                         person("b@hopital.test", "uid=b,ou=p")],
                        [Group("cn=svc,ou=g", "svc", frozenset({"uid=a,ou=p"}))])
    changes, found = plan_changes(snapshot, existing, s)
    # a's grant is an admin's: kept as it is; b left the group: her managed grant goes.
    assert [c.text for c in changes] == [
        "revoke svc@hopital.test from b@hopital.test (no longer in its groups)"]
    assert found == []


def test_grants_on_one_folder_are_not_the_syncs() -> None:
    """A grant on one folder (SETACL, `mssctl mailbox grant --folder`) is
    neither the box grant the sync compares with nor one it may revoke."""
    s = settings(groups={"base_dn": "ou=g"},
                 grants=[{"group": "svc", "mailbox": "svc@hopital.test", "rights": "lr"}])
    a = account(1, "a@hopital.test", dn="uid=a,ou=p")
    b = account(2, "b@hopital.test", dn="uid=b,ou=p")
    grants = [Grant(1, 1, 9, "lr", managed_by="ldap"),
              Grant(2, 1, 9, "w", managed_by="ldap", folder="INBOX"),  # read after the box's
              Grant(3, 2, 9, "lr", folder="INBOX")]
    existing = Existing([a, b], [mailbox(9, "svc@hopital.test")], grants,
                        frozenset({"hopital.test"}))
    snapshot = Snapshot([person("a@hopital.test", "uid=a,ou=p"),
                         person("b@hopital.test", "uid=b,ou=p")],
                        [Group("cn=svc,ou=g", "svc", frozenset({"uid=a,ou=p"}))])
    changes, found = plan_changes(snapshot, existing, s)
    assert (changes, found) == ([], [])


def test_a_group_read_in_part_leaves_its_box_alone() -> None:
    s = settings(groups={"base_dn": "ou=g"},
                 grants=[{"group": "svc", "mailbox": "svc@hopital.test", "rights": "lr"}])
    a = account(1, "a@hopital.test", dn="uid=a,ou=p")
    existing = Existing([a], [mailbox(9, "svc@hopital.test")],
                        [Grant(1, 1, 9, "lr", managed_by="ldap")], frozenset({"hopital.test"}))
    snapshot = Snapshot([person("a@hopital.test", "uid=a,ou=p")],
                        [Group("cn=svc,ou=g", "svc", frozenset(), complete=False)])
    changes, found = plan_changes(snapshot, existing, s)
    assert changes == []
    assert found == ["group svc (for svc@hopital.test) members read only in part: grants on "
                     "svc@hopital.test left as they are"]
