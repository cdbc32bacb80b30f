"""Directory synchronisation: the hospital's people and service groups
(LDAP) made into accounts, personal boxes and functional-box grants.

Three steps, so that a dry run and a real run print the very same changes:

1. `read_directory` (blocking LDAP, `policy.ldapdir`): every person and
   group, read whole before anything changes (a search that fails half-way
   changes nothing);
2. `plan_changes` (pure): compares them with the store's accounts, boxes and
   grants and returns the `Change`s, in the order they are applied;
3. `apply_changes`: makes them, one store call each, each audited with actor
   ``ldap-sync`` (the admin-change actions: account-add, account-update,
   account-disable, account-enable, mailbox-add, mailbox-grant,
   mailbox-revoke).

What the sync owns: the accounts it made (their `directory_dn`), and the
grants it made (`managed_by = "ldap"`). It never deletes anything (an
account gone from the directory is disabled, its boxes and mail kept),
never touches an account made by hand (one with the same login is reported
and left alone), never revokes or changes a grant an admin made, and never
enables an account an admin disabled (only those it disabled itself). A
directory answering no people at all while the store holds synced accounts
is refused (an empty search base or a broken filter must not disable
everyone), and grants of a group the directory does not have are left as
they are (reported).

Disabling an account and revoking a grant bump the access epoch in their
transaction, so open sessions lose the access at their next command.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conf.settings import LdapSettings
from policy.audit import AuditSink
from storage.interface import (
    Account,
    AccountClass,
    AlreadyExists,
    Grant,
    Mailbox,
    MailboxType,
    MessageStore,
    NotFound,
    StoreError,
)

log = logging.getLogger(__name__)

ACTOR = "ldap-sync"
MANAGED_BY = "ldap"
SYNC_NAME = "ldap"

Progress = Callable[[str, int], None]  # (what, how many so far)


def normalise_dn(dn: str) -> str:
    """A DN compared as LDAP servers mostly write them: lower-case, no
    spaces around the separators. (Escaped separators keep their escape.)"""
    out: list[str] = []
    for rdn in _split_unescaped(dn.strip(), ","):
        parts = [_attr_value(p) for p in _split_unescaped(rdn, "+")]
        out.append("+".join(parts))
    return ",".join(out).lower()


def _attr_value(ava: str) -> str:
    name, eq, value = ava.partition("=")
    return f"{name.strip()}{eq}{value.strip()}"


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def is_disabled(attribute: str | None, value: str | None) -> bool:
    """The directory's disabled flag: Active Directory's userAccountControl
    is a bit mask (bit 2, ACCOUNTDISABLE); any other attribute disables when
    it holds TRUE, yes or 1 (case-insensitive)."""
    if not attribute or value is None:
        return False
    if attribute.lower() == "useraccountcontrol":
        try:
            return bool(int(value, 0) & 2)
        except ValueError:
            return False
    return value.strip().lower() in ("true", "yes", "1")


# ---------------------------------------------------------------- directory


@dataclass(frozen=True, slots=True)
class Person:
    dn: str
    login: str
    mail: str | None
    idnat: str | None
    display_name: str
    account_class: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class Group:
    dn: str
    name: str | None
    members: frozenset[str]  # normalised member DNs
    # False when the server sent only part of the members (Active Directory
    # ranges, `member;range=0-1499`, that ldap3 could not complete): the
    # grants of its boxes are then left as they are.
    complete: bool = True


@dataclass
class Snapshot:
    people: list[Person]
    groups: list[Group]
    problems: list[str] = field(default_factory=list)


def person_from(entry: Any, settings: LdapSettings) -> Person | str:
    """The Person of a directory entry, or the problem that skips it."""
    a = settings.attributes
    login = (entry.first(a.login) or "").lower()
    if not login:
        return f"{entry.dn}: no {a.login}: skipped"
    if any(c.isspace() for c in login) or len(login) > 320:
        return f"{entry.dn}: {a.login} {login!r} is not a usable login: skipped"
    mail = (entry.first(a.mail) or "").lower() if a.mail else ""
    raw_class = entry.first(a.account_class) if a.account_class else None
    account_class = settings.default_class
    if raw_class is not None:
        account_class = settings.class_map.get(raw_class.lower(), account_class)
    return Person(
        dn=entry.dn, login=login, mail=mail or None, idnat=entry.first(a.idnat),
        display_name=(entry.first(a.display_name) or "")[:255], account_class=account_class,
        disabled=is_disabled(a.disabled, entry.first(a.disabled)))


def read_directory(settings: LdapSettings, *, progress: Progress | None = None) -> Snapshot:
    """Every person and group (blocking; raises policy.ldapdir.DirectoryError)."""
    from policy.ldapdir import Directory

    directory = Directory(settings)
    a = settings.attributes
    wanted = [n for n in (a.login, a.mail, a.idnat, a.display_name, a.account_class,
                          a.disabled) if n]
    snapshot = Snapshot([], [])
    conn = directory.connect()
    try:
        seen: dict[str, str] = {}
        for entry in directory.search(conn, settings.people, wanted):
            found = person_from(entry, settings)
            if isinstance(found, str):
                snapshot.problems.append(found)
            elif found.login in seen:
                snapshot.problems.append(f"{entry.dn}: login {found.login} is also "
                                         f"{seen[found.login]}'s: skipped")
            else:
                seen[found.login] = found.dn
                snapshot.people.append(found)
            if progress is not None and len(snapshot.people) % 100 == 0:
                progress("people", len(snapshot.people))
        groups = settings.groups
        if groups is not None:
            attrs = [groups.member_attribute, groups.name_attribute]
            for entry in directory.search(conn, groups, attrs):
                ranged = f"{groups.member_attribute.lower()};range="
                snapshot.groups.append(Group(
                    dn=entry.dn, name=entry.first(groups.name_attribute),
                    members=frozenset(normalise_dn(m) for m in
                                      entry.values(groups.member_attribute)),
                    complete=not any(k.lower().startswith(ranged) for k in entry.attributes)))
                if progress is not None and len(snapshot.groups) % 10 == 0:
                    progress("groups", len(snapshot.groups))
    finally:
        conn.unbind()
    return snapshot


# ---------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class Change:
    """One change: `text` is what `mssctl ldap sync` prints; `kind` orders
    and counts them."""

    kind: str
    text: str
    login: str = ""
    address: str = ""
    values: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.values).get(name, default)


# Applied in this order: what withdraws access first.
ORDER = ("account-disable", "mailbox-revoke", "account-update", "account-add",
         "account-enable", "mailbox-add", "mailbox-grant")


@dataclass(frozen=True, slots=True)
class Existing:
    """What the store holds, as the plan needs it."""

    accounts: Sequence[Account]
    mailboxes: Sequence[Mailbox]
    grants: Sequence[Grant]
    domains: frozenset[str]


def read_existing(store: MessageStore) -> Existing:
    return Existing(store.list_accounts(), store.list_mailboxes(), store.list_grants(),
                    frozenset(d.name for d in store.list_domains()))


def _quote(text: str | None) -> str:
    return '"' + (text or "").replace('"', '\\"') + '"'


def _rights_text(rights: str, send_as: bool) -> str:
    return rights + (", send-as" if send_as else "")


def plan_changes(snapshot: Snapshot, existing: Existing,
                 settings: LdapSettings) -> tuple[list[Change], list[str]]:
    """The changes that make the store follow the directory, and the
    problems found (entries skipped, conflicts left alone). Pure."""
    problems = list(snapshot.problems)
    changes: list[Change] = []
    by_login = {a.login: a for a in existing.accounts}
    by_dn = {normalise_dn(a.directory_dn): a for a in existing.accounts if a.directory_dn}
    boxes = {m.address: m for m in existing.mailboxes}
    synced: dict[str, str] = {}  # normalised person DN -> login, for grants
    kept_logins: set[str] = set()

    for p in snapshot.people:
        ndn = normalise_dn(p.dn)
        account = by_dn.get(ndn)
        if account is None:
            other = by_login.get(p.login)
            if other is not None and other.directory_dn is None:
                problems.append(f"{p.dn}: account {p.login} exists and was made by hand: "
                                "left alone")
                continue
            if other is not None and other.directory_dn is not None:
                account = other  # the entry moved (a new DN): same person
        if account is not None and account.login != p.login:
            problems.append(f"{p.dn}: its login changed from {account.login} to {p.login}: "
                            "logins are not renamed; left as it is")
            kept_logins.add(account.login)
            synced[ndn] = account.login
            continue
        synced[ndn] = p.login
        kept_logins.add(p.login)
        if account is None:
            details = [p.account_class, _quote(p.display_name)]
            if p.idnat:
                details.append(f"IdNat_PS {p.idnat}")
            if p.disabled:
                details.append("disabled in the directory")
            changes.append(Change("account-add",
                                  f"add account {p.login} ({', '.join(details)}) from {p.dn}",
                                  login=p.login,
                                  values=(("name", p.display_name), ("account_class",
                                          p.account_class), ("idnat", p.idnat),
                                          ("dn", p.dn), ("active", not p.disabled))))
        else:
            diffs: list[tuple[str, Any, Any]] = []
            for name, old, new in (("display_name", account.display_name, p.display_name),
                                   ("idnat", account.idnat, p.idnat),
                                   ("account_class", account.account_class.value,
                                    p.account_class),
                                   ("directory_dn", account.directory_dn, p.dn)):
                if (old or None) != (new or None):
                    diffs.append((name, old, new))
            if diffs:
                text = ", ".join(f"{n} {_quote(o)} -> {_quote(v)}" for n, o, v in diffs)
                changes.append(Change("account-update", f"update account {p.login}: {text}",
                                      login=p.login,
                                      values=tuple((n, v) for n, _, v in diffs)))
            if p.disabled and account.active:
                changes.append(Change("account-disable",
                                      f"disable account {p.login} (disabled in the directory)",
                                      login=p.login, values=(("reason", "directory-disabled"),
                                                             ("dn", p.dn))))
            elif not p.disabled and not account.active:
                if account.directory_disabled:
                    changes.append(Change("account-enable",
                                          f"enable account {p.login} (enabled in the "
                                          "directory)", login=p.login,
                                          values=(("dn", p.dn),)))
                else:
                    problems.append(f"{p.dn}: account {p.login} was disabled by an admin: "
                                    "left disabled")
        if p.mail:
            _domain = p.mail.rpartition("@")[2]
            box = boxes.get(p.mail)
            if box is None:
                if _domain in existing.domains:
                    changes.append(Change("mailbox-add",
                                          f"add mailbox {p.mail} (PER, owner {p.login})",
                                          login=p.login, address=p.mail,
                                          values=(("mailbox_type", "PER"),
                                                  ("name", p.display_name))))
                else:
                    problems.append(f"{p.dn}: {p.mail} is not in a served domain: no box")
            elif account is not None and box.owner_account_id not in (None, account.id):
                problems.append(f"{p.dn}: mailbox {p.mail} belongs to another account: "
                                "left alone")

    # Accounts the directory no longer has.
    if not snapshot.people and any(a.directory_dn and a.active for a in existing.accounts):
        raise EmptyDirectory("the directory returned no people while synchronised accounts "
                             "exist: nothing disabled (check ldap.people)")
    for a in existing.accounts:
        if a.directory_dn and a.login not in kept_logins and a.active:
            changes.append(Change("account-disable",
                                  f"disable account {a.login} (gone from the directory)",
                                  login=a.login, values=(("reason", "directory-gone"),
                                                         ("dn", a.directory_dn))))

    changes += _plan_grants(snapshot, existing, settings, synced, boxes, problems)
    changes.sort(key=lambda c: (ORDER.index(c.kind), c.login, c.address))
    return changes, problems


class EmptyDirectory(Exception):
    """The directory answered no people while synced accounts exist."""


def _plan_grants(snapshot: Snapshot, existing: Existing, settings: LdapSettings,
                 synced: dict[str, str], boxes: dict[str, Mailbox],
                 problems: list[str]) -> list[Change]:
    changes: list[Change] = []
    groups_by_dn = {normalise_dn(g.dn): g for g in snapshot.groups}
    groups_by_name: dict[str, Group] = {}
    for g in snapshot.groups:
        if g.name:
            groups_by_name.setdefault(g.name.lower(), g)
    # (login, mailbox) -> (rights, send_as, the groups giving it)
    wanted: dict[tuple[str, str], tuple[set[str], bool, list[str]]] = {}
    frozen: set[str] = set()  # boxes whose grants are left as they are
    for mapping in settings.grants:
        key = mapping.group
        group = (groups_by_dn.get(normalise_dn(key)) if "=" in key
                 else groups_by_name.get(key.lower()))
        if group is None or not group.complete:
            why = "not found in the directory" if group is None else "members read only in part"
            problems.append(f"group {key} (for {mapping.mailbox}) {why}: "
                            f"grants on {mapping.mailbox} left as they are")
            frozen.add(mapping.mailbox)
            continue
        if mapping.mailbox not in boxes:
            domain = mapping.mailbox.rpartition("@")[2]
            if domain not in existing.domains:
                problems.append(f"grants: {mapping.mailbox} is not in a served domain")
                frozen.add(mapping.mailbox)
                continue
            if not any(c.address == mapping.mailbox for c in changes):
                changes.append(Change("mailbox-add",
                                      f"add mailbox {mapping.mailbox} (ORG, for group "
                                      f"{group.name or group.dn})", address=mapping.mailbox,
                                      values=(("mailbox_type", "ORG"),
                                              ("name", group.name or ""))))
        for member in sorted(group.members):
            login = synced.get(member)
            if login is None:
                continue  # not a synced person (a nested group, the base DN ...)
            letters, send_as, via = wanted.setdefault((login, mapping.mailbox),
                                                      (set(), False, []))
            letters.update(mapping.rights)
            via.append(group.name or group.dn)
            wanted[(login, mapping.mailbox)] = (letters, send_as or mapping.send_as, via)

    logins = {a.id: a.login for a in existing.accounts}
    addresses = {m.id: m.address for m in existing.mailboxes}
    have: dict[tuple[str, str], Grant] = {}
    for grant in existing.grants:
        # The sync manages grants on whole boxes; a grant on one folder
        # (SETACL, `mssctl mailbox grant --folder`) is never its business.
        if grant.folder:
            continue
        if grant.account_id in logins and grant.mailbox_id in addresses:
            have[(logins[grant.account_id], addresses[grant.mailbox_id])] = grant
    all_rights = "lrswipkxtea"
    for (login, address), (letters, send_as, via) in sorted(wanted.items()):
        rights: str
        rights = "".join(r for r in all_rights if r in letters)
        current = have.get((login, address))
        groups_text = ", ".join(sorted(set(via)))
        if current is None or not (current.rights or current.send_as):
            changes.append(Change("mailbox-grant",
                                  f"grant {address} to {login}: {_rights_text(rights, send_as)} "
                                  f"(group {groups_text})", login=login, address=address,
                                  values=(("rights", rights), ("send_as", send_as),
                                          ("rights_before", ""), ("groups", groups_text))))
        elif current.managed_by != MANAGED_BY:
            continue  # an admin's grant: never changed by the sync
        elif current.rights != rights or current.send_as != send_as:
            changes.append(Change(
                "mailbox-grant",
                f"change grant of {address} to {login}: "
                f"{_rights_text(current.rights, current.send_as)} -> "
                f"{_rights_text(rights, send_as)} (group {groups_text})",
                login=login, address=address,
                values=(("rights", rights), ("send_as", send_as),
                        ("rights_before", current.rights), ("groups", groups_text))))
    for (login, address), old in sorted(have.items()):
        if old.managed_by != MANAGED_BY or (login, address) in wanted or address in frozen:
            continue
        changes.append(Change("mailbox-revoke",
                              f"revoke {address} from {login} (no longer in its groups)",
                              login=login, address=address,
                              values=(("rights", ""), ("rights_before", old.rights))))
    return changes


# ---------------------------------------------------------------- applying


# Changes made per transaction (`MessageStore.bulk_writes`): one commit per
# chunk instead of one per change, and the database's write lock held a
# fraction of a second at a time, so live sessions barely wait.
CHUNK = 100


def apply_changes(store: MessageStore, audit: AuditSink, changes: Sequence[Change], *,
                  progress: Progress | None = None) -> tuple[dict[str, int], list[str]]:
    """Makes the changes, CHUNK per transaction, each audited (actor
    ldap-sync) once its transaction is committed; returns the counts per
    kind and the changes that failed (the others are made: each one stands
    alone). A StoreUnavailable stops the run (raised; the changes of the
    chunk it hit are audited as failed)."""
    from storage.interface import StoreUnavailable

    counts: dict[str, int] = {}
    failed: list[str] = []
    ids: dict[str, int] = {}
    done = 0
    for start in range(0, len(changes), CHUNK):
        outcomes: list[tuple[Change, dict[str, Any] | str]] = []
        try:
            with store.bulk_writes():
                for change in changes[start:start + CHUNK]:
                    try:
                        outcomes.append((change, _apply(store, change, ids)))
                    except StoreUnavailable:
                        raise
                    except (StoreError, ValueError) as exc:
                        outcomes.append((change, f"{type(exc).__name__}: {exc}"
                                         if str(exc) else type(exc).__name__))
        except StoreUnavailable:
            for change, _ in outcomes:
                audit.record(ACTOR, change.kind, change.address or change.login, "fail",
                             reason="the database is unavailable", **_details(change))
            raise
        for change, outcome in outcomes:
            target = change.address or change.login
            if isinstance(outcome, str):
                audit.record(ACTOR, change.kind, target, "fail", reason=outcome,
                             **_details(change))
                failed.append(f"{change.text}: {outcome}")
                continue
            audit.record(ACTOR, change.kind, target, "ok", **_details(change), **outcome)
            counts[change.kind] = counts.get(change.kind, 0) + 1
        done += len(outcomes)
        if progress is not None:
            progress("changes", done)
    return counts, failed


def _details(change: Change) -> dict[str, Any]:
    out = {k: v for k, v in change.values if v is not None}
    if change.login and change.address:
        out["login"] = change.login
    return out


def _account_id(store: MessageStore, login: str, ids: dict[str, int]) -> int:
    if login not in ids:
        ids[login] = store.get_account(login).id
    return ids[login]


def _apply(store: MessageStore, change: Change, ids: dict[str, int]) -> dict[str, Any]:
    kind = change.kind
    if kind == "account-add":
        account = store.add_account(change.login, change.get("name") or "",
                                    AccountClass(change.get("account_class")),
                                    idnat=change.get("idnat"), directory_dn=change.get("dn"))
        ids[account.login] = account.id
        if not change.get("active", True):
            store.update_account(account.login, active=False, directory_disabled=True)
        return {}
    if kind == "account-update":
        fields = dict(change.values)
        if "account_class" in fields:
            fields["account_class"] = AccountClass(fields["account_class"])
        store.update_account(change.login, **fields)
        return {}
    if kind == "account-disable":
        store.update_account(change.login, active=False, directory_disabled=True)
        return {"active": False}
    if kind == "account-enable":
        store.update_account(change.login, active=True, directory_disabled=False)
        return {"active": True}
    if kind == "mailbox-add":
        box_type = MailboxType(change.get("mailbox_type"))
        owner = (_account_id(store, change.login, ids)
                 if box_type is MailboxType.PER and change.login else None)
        try:
            store.add_mailbox(change.address, box_type, display_name=change.get("name") or "",
                              owner_account_id=owner)
        except AlreadyExists:
            pass  # made meanwhile (another admin): nothing to do
        return {"owner": change.login or None}
    if kind in ("mailbox-grant", "mailbox-revoke"):
        account_id = _account_id(store, change.login, ids)
        try:
            mailbox = store.get_mailbox(change.address)
        except NotFound:
            raise
        if kind == "mailbox-revoke":
            store.set_grant(account_id, mailbox.id, "", send_as=False)
            return {}
        store.set_grant(account_id, mailbox.id, change.get("rights"),
                        send_as=bool(change.get("send_as")), managed_by=MANAGED_BY)
        return {}
    raise ValueError(f"unknown change {kind}")


# ---------------------------------------------------------------- one run


@dataclass
class SyncReport:
    changes: list[Change]
    problems: list[str]
    counts: dict[str, int]
    failed: list[str]
    people: int
    groups: int
    duration: float
    dry_run: bool

    @property
    def summary_counts(self) -> dict[str, int]:
        out = {"people": self.people, "groups": self.groups, "changes": len(self.changes),
               "failed": len(self.failed), "problems": len(self.problems)}
        out.update({k.replace("-", "_"): v for k, v in self.counts.items()})
        return out


def run_sync(settings: LdapSettings, store: MessageStore, audit: AuditSink, *,
             dry_run: bool = False, progress: Progress | None = None,
             read: Callable[..., Snapshot] = read_directory) -> SyncReport:
    """One synchronisation (blocking). Raises policy.ldapdir.DirectoryError,
    EmptyDirectory or StoreError before any change when the directory or
    the store cannot be read."""
    started = time.monotonic()
    snapshot = read(settings, progress=progress)
    changes, problems = plan_changes(snapshot, read_existing(store), settings)
    counts: dict[str, int] = {}
    failed: list[str] = []
    if not dry_run and changes:
        counts, failed = apply_changes(store, audit, changes, progress=progress)
    return SyncReport(changes, problems, counts, failed, len(snapshot.people),
                      len(snapshot.groups), time.monotonic() - started, dry_run)


# ---------------------------------------------------------------- lease


@dataclass
class LeasedRun:
    """What `sync_with_lease` did: `report` None when it did not run
    (`skipped` says why) or failed (`error`)."""

    report: SyncReport | None = None
    skipped: str | None = None
    error: str | None = None


def sync_with_lease(settings: LdapSettings, store: MessageStore, audit: AuditSink,
                    holder: str, *, dry_run: bool = False, progress: Progress | None = None,
                    min_interval: float | None = None,
                    clock: Callable[[], Any] | None = None,
                    read: Callable[..., Snapshot] = read_directory,
                    started_by: str | None = None) -> LeasedRun:
    """One run under the database lease (one process of one node at a
    time; `min_interval`: and not if a run started less than that many
    seconds ago, for the periodic sync of several workers and nodes). The
    result (time, duration, counts, error) is kept in the store and one
    `ldap-sync` audit event records it. A dry run takes no lease and
    records nothing. `started_by`: who asked (`admin:<user>` for mssctl),
    in that event."""
    from datetime import UTC, datetime, timedelta

    from policy.ldapdir import DirectoryError

    now_of = clock or (lambda: datetime.now(UTC))
    if dry_run:
        try:
            return LeasedRun(run_sync(settings, store, audit, dry_run=True,
                                      progress=progress, read=read))
        except (DirectoryError, EmptyDirectory) as exc:
            return LeasedRun(error=str(exc))
    started = now_of()
    not_after = (started - timedelta(seconds=min_interval)) if min_interval else None
    if not store.take_directory_lease(SYNC_NAME, holder, started,
                                      started + timedelta(seconds=settings.sync_lease),
                                      not_started_after=not_after):
        return LeasedRun(skipped="another synchronisation holds the lease or ran recently")
    report: SyncReport | None = None
    error: str | None = None
    try:
        report = run_sync(settings, store, audit, progress=progress, read=read)
    except (DirectoryError, EmptyDirectory) as exc:
        error = str(exc)
    except StoreError as exc:
        error = f"store: {exc or type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - recorded, and the lease released
        ref = secrets.token_hex(6)
        log.exception("ldap sync: unexpected error (ref %s)", ref)
        error = f"unexpected error {type(exc).__name__} (ref {ref}, in the log)"
    finished = now_of()
    counts = report.summary_counts if report is not None else {}
    if report is not None and report.failed:
        error = f"{len(report.failed)} change(s) failed; first: {report.failed[0]}"
    result = "ok" if error is None else "fail"
    try:
        store.record_directory_sync(SYNC_NAME, holder=holder, started=started,
                                    finished=finished, result=result, counts=counts,
                                    error=error)
    finally:
        store.release_directory_lease(SYNC_NAME, holder)
    audit.record(ACTOR, "ldap-sync", ",".join(settings.urls), result, holder=holder,
                 started_by=started_by, duration=round((finished - started).total_seconds(), 3),
                 **({"reason": error} if error else {}), **counts)
    return LeasedRun(report=report, error=error)
