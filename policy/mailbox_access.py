"""May this identity read or change that mailbox: RFC 4314 rights from grants
with validity windows, the access of open sessions, and access control lists."""

from __future__ import annotations

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
    Mailbox,
    NotFound,
)


class MailboxAccessDecisions(PolicyCore):
    """IMAP's decisions: visible mailboxes, rights, ACLs, open sessions."""

    def accessible_mailboxes(self, identity: Identity) -> list[AccessibleMailbox]:
        """The account's own mailboxes, then those shared with it."""
        out: list[AccessibleMailbox] = []
        seen: set[int] = set()
        access = self.store.mailbox_access(identity.account.id)
        for mb in access.owned:
            if mb.active:
                out.append(AccessibleMailbox(mb, ALL_RIGHTS, owned=True))
                seen.add(mb.id)
        for grant, shared in access.shared:
            if shared.id not in seen and shared.active and self._grant_current(grant):
                out.append(AccessibleMailbox(shared, grant.rights, owned=False))
                seen.add(shared.id)
        return out

    def primary_mailbox(self, identity: Identity) -> Mailbox | None:
        """The personal namespace of the session: the mailbox named like the
        login, else the first owned one."""
        owned = [m for m in self.store.mailboxes_owned_by(identity.account.id) if m.active]
        for m in owned:
            if m.address == identity.account.login:
                return m
        return owned[0] if owned else None

    def mailbox_rights(self, identity: Identity, mailbox: Mailbox) -> str:
        """RFC 4314 rights of the identity on a mailbox ("" = none: the
        protocol must then answer as if the mailbox did not exist)."""
        if not mailbox.active or not identity.account.active:
            return ""
        if mailbox.owner_account_id is not None and mailbox.owner_account_id == identity.account.id:
            return ALL_RIGHTS
        for grant in self._current_grants(identity.account.id):
            if grant.mailbox_id == mailbox.id:
                return grant.rights
        return ""

    def session_access(self, identity: Identity, mailbox: Mailbox | None) -> SessionAccess:
        """Rechecks an open session against the store as it is now: the
        account must still be active, and the mailbox it has selected (if
        any) still readable ("r", the right SELECT needed). A withdrawal is
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
                for grant in self._current_grants(account.id):
                    if grant.mailbox_id == mailbox.id:
                        rights, until = grant.rights, _aware(grant.valid_until)
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
        rights = self.mailbox_rights(identity, mailbox)
        target = f"{mailbox.address}/{folder}"
        shared = mailbox.owner_account_id != identity.account.id
        if len(right) == 1 and right in rights:
            self.audit.record(identity.name, action, target, "allow", right=right,
                              shared=shared, mailbox_type=mailbox.mailbox_type.value)
            return ALLOW
        reason = Reason.NO_ACCESS if "l" in rights and right != "l" else Reason.NOT_VISIBLE
        return self._deny(identity.name, action, target, reason, right=right)

    # RFC 4314 ACL commands. Rights are granted per store mailbox (an
    # address), so an ACL applies to every folder of it; identifiers are
    # account logins; the owner's rights are fixed (all rights). Each method
    # decides first, then (when allowed) checks that the folder exists:
    # `NotFound` is raised after the decision, as the store raises it.

    def my_rights(self, identity: Identity, mailbox: Mailbox, folder: str) -> RightsDecision:
        """MYRIGHTS: the identity's own rights; refused (Reason.NOT_VISIBLE) unless
        it holds "l" or "r". Raises NotFound (after the decision) for a
        missing folder."""
        rights = self.mailbox_rights(identity, mailbox)
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
        for grant in self.store.grants_for_mailbox(mailbox.id):
            if grant.rights and grant.account_id != owner:
                entries.append((self.store.get_account_by_id(grant.account_id).login,
                                grant.rights))
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
        (`rights` ""): needs "a". Refused with Reason.UNKNOWN_IDENTIFIER (no such
        account), Reason.OWNER_RIGHTS_FIXED or Reason.UNKNOWN_RIGHT. Records the access
        check, then the change (or why there was none). Raises NotFound
        (after the access check, before any change) for a missing folder."""
        decision = self.check_mailbox_access(identity, mailbox, folder, "a", "setacl")
        if not decision.allowed:
            return decision
        self.store.get_folder(mailbox.id, folder)
        try:
            account = self.store.get_account(identifier)
        except NotFound:
            return self._deny(identity.name, "setacl", mailbox.address, Reason.UNKNOWN_IDENTIFIER,
                              identifier=identifier)
        if account.id == mailbox.owner_account_id:
            return self._deny(identity.name, "setacl", mailbox.address, Reason.OWNER_RIGHTS_FIXED,
                              identifier=identifier)
        current = next((g.rights for g in self.store.grants_for_mailbox(mailbox.id)
                        if g.account_id == account.id), "")
        new: str | None
        if rights.startswith("+"):
            new = normalise_rights(current + rights[1:])
        elif rights.startswith("-"):
            remove = normalise_rights(rights[1:])
            new = None if remove is None else "".join(r for r in current if r not in remove)
        else:
            new = normalise_rights(rights)
        if new is None:
            return self._deny(identity.name, "setacl", mailbox.address, Reason.UNKNOWN_RIGHT,
                              identifier=identifier)
        self.store.set_grant(account.id, mailbox.id, new)
        self.audit.record(identity.name, "setacl", mailbox.address, "ok",
                          identifier=identifier, rights=new)
        return ALLOW
