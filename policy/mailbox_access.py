"""May this identity read or change that mailbox: RFC 4314 rights from grants
with validity windows, the access of open sessions, and access control lists."""

from __future__ import annotations

from datetime import datetime

from policy.core import PolicyCore, _aware
from policy.reasons import Reason
from policy.verdicts import (
    ALL_RIGHTS,
    ALLOW,
    AccessibleMailbox,
    AclDecision,
    Decision,
    Identity,
    ListRightsDecision,
    RightsDecision,
    SessionAccess,
    normalise_rights,
)
from storage.interface import (
    HIERARCHY_SEPARATOR,
    Grant,
    Mailbox,
    NotFound,
)


class MailboxAccessDecisions(PolicyCore):
    """IMAP's decisions: visible mailboxes, rights, ACLs, open sessions."""

    def accessible_mailboxes(self, identity: Identity) -> list[AccessibleMailbox]:
        """The account's own mailboxes, then those shared with it: by a
        current grant on the whole mailbox or on one of its folders."""
        out: list[AccessibleMailbox] = []
        seen: set[int] = set()
        access = self.store.mailbox_access(identity.account.id)
        for mb in access.owned:
            if mb.active:
                out.append(AccessibleMailbox(mb, ALL_RIGHTS, owned=True))
                seen.add(mb.id)
        shared: dict[int, tuple[Mailbox, list[str], list[tuple[str, str]]]] = {}
        for grant, mb in access.shared:
            if mb.id in seen or not mb.active or not self._grant_current(grant):
                continue
            _, whole, folders = shared.setdefault(mb.id, (mb, [], []))
            if grant.folder:
                folders.append((grant.folder, grant.rights))
            else:
                whole.append(grant.rights)
        for mb, whole, folders in shared.values():
            out.append(AccessibleMailbox(mb, "".join(whole), owned=False,
                                         folder_rights=tuple(folders)))
        return out

    def primary_mailbox(self, identity: Identity) -> Mailbox | None:
        """The personal namespace of the session: the mailbox named like the
        login, else the first owned one."""
        owned = [m for m in self.store.mailboxes_owned_by(identity.account.id) if m.active]
        for m in owned:
            if m.address == identity.account.login:
                return m
        return owned[0] if owned else None

    def mailbox_rights(self, identity: Identity, mailbox: Mailbox, folder: str | None = None) -> str:
        """RFC 4314 rights of the identity on a mailbox ("" = none: the
        protocol must then answer as if the mailbox did not exist): those
        of its grant on the whole mailbox, and with `folder` those of its
        grant on that folder too."""
        if not mailbox.active or not identity.account.active:
            return ""
        if mailbox.owner_account_id is not None and mailbox.owner_account_id == identity.account.id:
            return ALL_RIGHTS
        return _granted(self._current_grants(identity.account.id), mailbox.id, folder)[0]

    def grants_change_at(self, identity: Identity) -> datetime | None:
        """The next moment one of the account's grants begins or ends by
        itself (no change in the store marks it): what was decided about
        the mailboxes it may look up holds until then."""
        now = self.now()
        moments = [t for g in self.store.grants_for_account(identity.account.id)
                   for t in (_aware(g.valid_from), _aware(g.valid_until))
                   if t is not None and t > now]
        return min(moments, default=None)

    def session_access(
        self, identity: Identity, mailbox: Mailbox | None, folder: str | None = None
    ) -> SessionAccess:
        """Rechecks an open session against the store as it is now: the
        account must still be active, and the mailbox it has selected (if
        any) still readable ("r", the right SELECT needed; on `folder`, the
        selected folder, when given: a folder grant counts). A withdrawal is
        a decision and is audited (action "session", result "deny"); a
        session that keeps its access records nothing (its access was
        recorded when it was granted)."""
        epoch = self.store.access_epoch()  # first: a later change moves it again
        try:
            account = self.store.get_account_by_id(identity.account.id)
        except NotFound:
            account = None
        mailbox_id = mailbox.id if mailbox is not None else None
        if account is None or not account.active:
            decision = self._deny(identity.name, "session", identity.name, Reason.ACCOUNT_DISABLED)
            return SessionAccess(decision, epoch, mailbox_id)
        if mailbox is None:
            return SessionAccess(ALLOW, epoch)
        try:
            current = self.store.get_mailbox_by_id(mailbox.id)
        except NotFound:
            current = None
        rights, until = "", None
        if current is not None and current.active:
            if current.owner_account_id == account.id:
                rights = ALL_RIGHTS
            else:
                rights, until = _granted(self._current_grants(account.id), mailbox.id, folder)
        if "r" not in rights:
            decision = self._deny(identity.name, "session", mailbox.address, Reason.MAILBOX_WITHDRAWN)
            return SessionAccess(decision, epoch, mailbox_id)
        return SessionAccess(ALLOW, epoch, mailbox_id, until)

    def check_mailbox_access(
        self, identity: Identity, mailbox: Mailbox, folder: str, right: str, action: str
    ) -> Decision:
        """May the identity use `right` on a folder of the mailbox? Every
        access is recorded (health-data hosting: record every access), naming
        the agent even on a shared box.

        A denial says which answer is due (RFC 4314 6): Reason.NO_ACCESS when the
        identity may see the mailbox (holds "l") but lacks another right,
        Reason.NOT_VISIBLE otherwise: the protocol must then answer exactly as for
        a mailbox that does not exist."""
        rights = self.mailbox_rights(identity, mailbox, folder or None)
        target = f"{mailbox.address}/{folder}"
        shared = mailbox.owner_account_id != identity.account.id
        if len(right) == 1 and right in rights:
            self.audit.record(identity.name, action, target, "allow", right=right,
                              shared=shared, mailbox_type=mailbox.mailbox_type.value)
            return ALLOW
        reason = Reason.NO_ACCESS if "l" in rights and right != "l" else Reason.NOT_VISIBLE
        return self._deny(identity.name, action, target, reason, right=right)

    def check_create_access(
        self, identity: Identity, mailbox: Mailbox, folder: str, action: str
    ) -> Decision:
        """May the identity make `folder` in the mailbox (CREATE, the new name
        of RENAME)? RFC 4314 4 asks for "k" on the parent of the new name:
        the nearest folder above it that exists, as Dovecot's ACL plugin looks
        it up (CREATE of "a/b/c" under an existing "a" alone makes "a/b" too),
        else the mailbox's root, whose rights are those of the grant on the
        whole mailbox: a grant on one folder (INBOX included) lets one make
        folders under that folder only. Recorded under the new name, with
        the parent it was decided on.

        A denial is Reason.NO_ACCESS: the session already sees the mailbox
        (its namespace level), and the answer is the same whether the parent
        exists or not, so it tells nothing of folders one may not look up."""
        names = {f.name for f in self.store.list_folders(mailbox.id)}
        parent = folder
        while parent:
            parent = parent.rpartition(HIERARCHY_SEPARATOR)[0]
            if parent in names:
                break
        rights = self.mailbox_rights(identity, mailbox, parent or None)
        target = f"{mailbox.address}/{folder}"
        details: dict[str, object] = {"right": "k", "parent": f"{mailbox.address}/{parent}"}
        if "k" in rights:
            self.audit.record(identity.name, action, target, "allow", **details,
                              shared=mailbox.owner_account_id != identity.account.id,
                              mailbox_type=mailbox.mailbox_type.value)
            return ALLOW
        return self._deny(identity.name, action, target, Reason.NO_ACCESS, **details)

    # RFC 4314 ACL commands, on one folder (a mailbox name): the rights of
    # an identifier there are those of its grant on the whole mailbox
    # (`mssctl mailbox grant` without --folder) and of its grant on that
    # folder, which SETACL/DELETEACL change; identifiers are account logins;
    # the owner's rights are fixed (all rights). Each method decides first,
    # then (when allowed) checks that the folder exists: `NotFound` is
    # raised after the decision, as the store raises it.

    def my_rights(self, identity: Identity, mailbox: Mailbox, folder: str) -> RightsDecision:
        """MYRIGHTS: the identity's own rights; refused (Reason.NOT_VISIBLE) unless
        it holds "l" or "r". Raises NotFound (after the decision) for a
        missing folder."""
        rights = self.mailbox_rights(identity, mailbox, folder)
        target = f"{mailbox.address}/{folder}"
        if "l" not in rights and "r" not in rights:
            return RightsDecision(self._deny(identity.name, "myrights", target, Reason.NOT_VISIBLE))
        self.audit.record(identity.name, "myrights", target, "allow", rights=rights,
                          shared=mailbox.owner_account_id != identity.account.id)
        self.store.get_folder(mailbox.id, folder)
        return RightsDecision(ALLOW, rights)

    def acl(self, identity: Identity, mailbox: Mailbox, folder: str) -> AclDecision:
        """GETACL: needs "a". The owner (all rights), then every account
        holding a non-empty grant. Raises NotFound (after the decision) for
        a missing folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "getacl")
        if not decision.allowed:
            return AclDecision(decision)
        self.store.get_folder(mailbox.id, folder)
        entries: list[tuple[str, str]] = []
        owner = mailbox.owner_account_id
        if owner is not None:
            entries.append((self.store.get_account_by_id(owner).login, ALL_RIGHTS))
        by_account: dict[int, str] = {}
        for grant in self.store.grants_for_mailbox(mailbox.id):
            if grant.account_id != owner and grant.folder in ("", folder):
                by_account[grant.account_id] = by_account.get(grant.account_id, "") + grant.rights
        for account_id, letters in by_account.items():
            rights = normalise_rights(letters)
            if rights:
                entries.append((self.store.get_account_by_id(account_id).login, rights))
        return AclDecision(ALLOW, tuple(entries))

    def list_rights(self, identity: Identity, mailbox: Mailbox, folder: str) -> ListRightsDecision:
        """LISTRIGHTS: needs "a". Nothing is always granted; every right may
        be granted on its own. Raises NotFound (after the decision) for a
        missing folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "listrights")
        if not decision.allowed:
            return ListRightsDecision(decision)
        self.store.get_folder(mailbox.id, folder)
        return ListRightsDecision(ALLOW, "", tuple(ALL_RIGHTS))

    def set_rights(
        self, identity: Identity, mailbox: Mailbox, folder: str, identifier: str, rights: str
    ) -> Decision:
        """SETACL ("+r" adds, "-r" removes, "r" replaces) and DELETEACL
        (`rights` ""): needs "a". Changes the identifier's grant on this
        folder: its rights there become the new ones, less those its grant
        on the whole mailbox gives anyway. Refused with
        Reason.UNKNOWN_IDENTIFIER (no such account), Reason.OWNER_RIGHTS_FIXED,
        Reason.UNKNOWN_RIGHT or Reason.MAILBOX_RIGHTS_FIXED (SETACL would
        remove a right the grant on the whole mailbox gives: `mssctl mailbox
        grant` changes that one; DELETEACL removes the folder's grant and
        leaves it). Records the access check, then the change (or why there
        was none). Raises NotFound (after the access check, before any
        change) for a missing folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "setacl")
        if not decision.allowed:
            return decision
        self.store.get_folder(mailbox.id, folder)
        target = f"{mailbox.address}/{folder}"
        try:
            account = self.store.get_account(identifier)
        except NotFound:
            return self._deny(identity.name, "setacl", target, Reason.UNKNOWN_IDENTIFIER,
                              identifier=identifier)
        if account.id == mailbox.owner_account_id:
            return self._deny(identity.name, "setacl", target, Reason.OWNER_RIGHTS_FIXED,
                              identifier=identifier)
        # Only grants in force count: a whole-mailbox grant that ended (or has
        # not begun) neither fixes rights here nor is taken from the folder's
        # (found by review: SETACL then stored an empty grant, answered OK).
        grants = [g for g in self.store.grants_for_mailbox(mailbox.id)
                  if g.account_id == account.id and self._grant_in_window(g)]
        whole = normalise_rights("".join(g.rights for g in grants if not g.folder)) or ""
        current = normalise_rights(whole + "".join(g.rights for g in grants
                                                   if g.folder == folder)) or ""
        new: str | None
        if rights.startswith("+"):
            new = normalise_rights(current + rights[1:])
        elif rights.startswith("-"):
            remove = normalise_rights(rights[1:])
            new = None if remove is None else "".join(r for r in current if r not in remove)
        else:
            new = normalise_rights(rights)
        if new is None:
            return self._deny(identity.name, "setacl", target, Reason.UNKNOWN_RIGHT,
                              identifier=identifier)
        if rights and set(whole) - set(new):
            return self._deny(identity.name, "setacl", target, Reason.MAILBOX_RIGHTS_FIXED,
                              identifier=identifier, mailbox_rights=whole)
        # The whole-mailbox grant's rights stay out of the folder's: when that
        # grant is revoked (by hand or by the directory sync), the folder
        # keeps only what was given there in addition.
        own = "".join(r for r in new if r not in whole)
        self.store.set_grant(account.id, mailbox.id, own, folder=folder)
        details: dict[str, object] = {"identifier": identifier, "rights": own}
        if whole:
            details["mailbox_rights"] = whole
        self.audit.record(identity.name, "setacl", target, "ok", **details)
        return ALLOW


def _granted(grants: list[Grant], mailbox_id: int, folder: str | None) -> tuple[str, datetime | None]:
    """From current grants: the rights on a mailbox (its whole-mailbox
    grant's, and with `folder` that folder's grant's too) and the earliest
    end of those grants (when the rights must be judged again)."""
    letters: list[str] = []
    ends: list[datetime] = []
    for grant in grants:
        if grant.mailbox_id != mailbox_id or (grant.folder and grant.folder != folder):
            continue
        letters.append(grant.rights)
        end = _aware(grant.valid_until)
        if end is not None:
            ends.append(end)
    return normalise_rights("".join(letters)) or "", min(ends, default=None)
