"""Domains, accounts, mailboxes and grants (RFC 4314) of `SqlStore`."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from storage import crypto
from storage.interface import (
    DEFAULT_FOLDERS,
    Account,
    AccountClass,
    AlreadyExists,
    DirectoryEntry,
    DirectoryFields,
    Domain,
    Grant,
    Mailbox,
    MailboxAccess,
    MailboxType,
    NotFound,
    TotpFactor,
    check_directory_text,
)
from storage.sqlbase import (
    AE,
    AF,
    CP,
    A,
    D,
    F,
    FixedSelect,
    G,
    M,
    S,
    StoreBase,
    account_record,
    grant_record,
    mailbox_record,
    utcnow,
)

log = logging.getLogger(__name__)

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def _check_fingerprint(fingerprint: str) -> str:
    """A SHA-256 fingerprint as stored: 64 lower-case hex digits."""
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError("a certificate fingerprint is 64 lower-case hex digits (SHA-256)")
    return fingerprint


class DirectoryMixin(StoreBase):
    """The directory part of `storage.interface.MessageStore`."""

    # -- directory ---------------------------------------------------------

    def add_domain(self, name: str) -> Domain:
        name = name.lower().rstrip(".")
        try:
            with self._write() as c:
                new_id = c.execute(insert(D).values(name=name)).inserted_primary_key[0]
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(name) from exc
        return Domain(new_id, name)

    def list_domains(self) -> list[Domain]:
        with self._read() as c:
            rows = c.execute(select(D.c.id, D.c.name).order_by(D.c.name)).all()
        return [Domain(r.id, r.name) for r in rows]

    def add_account(
        self,
        login: str,
        display_name: str,
        account_class: AccountClass,
        *,
        idnat: str | None = None,
        cert_subject: str | None = None,
        password_hash: str | None = None,
        cert_pins: Sequence[str] = (),
    ) -> Account:
        login = login.lower()
        values = {
            "login": login,
            "display_name": display_name,
            "account_class": account_class,
            "active": True,
            "idnat": idnat,
            "cert_subject": cert_subject,
            "password_hash": password_hash,
        }
        pins = sorted({_check_fingerprint(p) for p in cert_pins})
        try:
            with self._write() as c:
                if pins:
                    self._refuse_pinned(c, pins)
                self._refuse_shared_identity(c, idnat, cert_subject, pinned=bool(pins))
                new_id = c.execute(insert(A).values(**values)).inserted_primary_key[0]
                if pins:
                    c.execute(insert(CP), [{"account_id": new_id, "fingerprint": p} for p in pins])
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(login) from exc
        return Account(id=new_id, **values)  # type: ignore[arg-type]

    @staticmethod
    def _refuse_shared_identity(c: Any, idnat: str | None, cert_subject: str | None, *,
                                pinned: bool) -> None:
        """A card (IdNat_PS) names one account, never two. A certificate
        subject too, except that several boxes of one structure may share
        its organisation id when each has its own certificate pinned (pins
        are matched first: `policy.certmap`)."""
        if idnat is not None:
            owner = c.execute(select(A.c.login).where(A.c.idnat == idnat).limit(1)).first()
            if owner is not None:
                raise AlreadyExists(f"IdNat_PS {idnat} is already account {owner.login}'s")
        if cert_subject is None:
            return
        owners = c.execute(
            select(A.c.login, select(CP.c.id).where(CP.c.account_id == A.c.id).exists()
                   .label("pinned"))
            .where(A.c.cert_subject == cert_subject).order_by(A.c.id)).all()
        if owners and not (pinned and all(o.pinned for o in owners)):
            raise AlreadyExists(
                f"certificate subject {cert_subject} is already account {owners[0].login}'s "
                "(accounts may share one only when each has its own certificate pinned)")

    def _one_account(self, column: str, value: object) -> Account | None:
        # Every LOGIN comes here: fixed SQL (see `FixedSelect`).
        q = self._fixed(f"account.{column}", A, f"t.{column} = ?", " ORDER BY t.id LIMIT 1")
        with self._dbapi(write=False) as cur:
            found = q.rows(cur, (value,))
        return account_record(found[0]) if found else None

    def get_account(self, login: str) -> Account:
        acc = self._one_account("login", login.lower())
        if acc is None:
            raise NotFound(login)
        return acc

    def get_account_by_id(self, account_id: int) -> Account:
        acc = self._one_account("id", account_id)
        if acc is None:
            raise NotFound(str(account_id))
        return acc

    def _only_account(self, column: str, value: str) -> Account | None:
        """The one account whose `column` is `value`. Two accounts named by
        one card or one certificate subject (made before that was refused,
        or by hand in the database) answer None: a certificate must never
        log in as whichever account happens to come first."""
        q = self._fixed(f"account.{column}.only", A, f"t.{column} = ?", " ORDER BY t.id LIMIT 2")
        with self._dbapi(write=False) as cur:
            found = q.rows(cur, (value,))
        if len(found) > 1:
            log.error("accounts %s and %s share the %s %r: certificate logins by it are "
                      "refused until one of them is changed", found[0].login, found[1].login,
                      column, value)
            return None
        return account_record(found[0]) if found else None

    def find_account_by_idnat(self, idnat: str) -> Account | None:
        return self._only_account("idnat", idnat)

    def find_account_by_cert_subject(self, subject: str) -> Account | None:
        return self._only_account("cert_subject", subject)

    def list_accounts(self) -> list[Account]:
        with self._read() as c:
            return [account_record(r) for r in c.execute(select(A).order_by(A.c.login))]

    # -- certificate pins --------------------------------------------------

    @staticmethod
    def _refuse_pinned(c: Any, fingerprints: Sequence[str]) -> None:
        taken = c.execute(select(CP.c.fingerprint).where(CP.c.fingerprint.in_(fingerprints)))
        for (fingerprint,) in taken:
            raise AlreadyExists(f"certificate {fingerprint} is pinned already")

    @staticmethod
    def _account_id(c: Any, login: str) -> int:
        account_id = c.execute(select(A.c.id).where(A.c.login == login.lower())).scalar()
        if account_id is None:
            raise NotFound(login)
        return int(account_id)

    def add_cert_pin(self, login: str, fingerprint: str) -> None:
        fingerprint = _check_fingerprint(fingerprint)
        try:
            with self._write() as c:
                account_id = self._account_id(c, login)
                self._refuse_pinned(c, [fingerprint])
                c.execute(insert(CP).values(account_id=account_id, fingerprint=fingerprint))
        except sa_exc.IntegrityError as exc:  # pinned by someone else meanwhile
            raise AlreadyExists(f"certificate {fingerprint} is pinned already") from exc

    def remove_cert_pins(self, login: str, fingerprint: str | None = None) -> int:
        with self._write() as c:
            where = CP.c.account_id == self._account_id(c, login)
            if fingerprint is not None:
                where = and_(where, CP.c.fingerprint == fingerprint.lower())
            return int(c.execute(delete(CP).where(where)).rowcount)

    def cert_pins(self, account_id: int) -> list[str]:
        with self._dbapi(write=False) as cur:
            rows = self._fixed("cert_pins.account_id", CP, "t.account_id = ?",
                               " ORDER BY t.fingerprint").rows(cur, (account_id,))
        return [r.fingerprint for r in rows]

    def find_account_by_cert_pin(self, fingerprint: str) -> Account | None:
        q = self._fixed("account.pin", A, "t.id = (SELECT p.account_id FROM cert_pins p "
                        "WHERE p.fingerprint = ?)")
        with self._dbapi(write=False) as cur:
            found = q.rows(cur, (fingerprint.lower(),))
        return account_record(found[0]) if found else None

    def _update_account(self, login: str, *, withdraws: bool = False, **values: Any) -> None:
        with self._write() as c:
            n = c.execute(update(A).where(A.c.login == login.lower()).values(**values)).rowcount
            if n and withdraws:
                _bump_access_epoch(c)
        if n == 0:
            raise NotFound(login)

    def set_password_hash(self, login: str, password_hash: str | None) -> None:
        self._update_account(login, password_hash=password_hash)

    def set_account_active(self, login: str, active: bool) -> None:
        self._update_account(login, withdraws=not active, active=active)

    def access_epoch(self) -> int:
        # Read by every guarded command of every session: fixed SQL.
        with self._dbapi(write=False) as cur:
            cur.execute("SELECT value FROM access_epoch WHERE id = 1")
            row = cur.fetchone()
        return int(row[0]) if row is not None else 0

    # -- second factor (one-time codes) -------------------------------------

    def set_totp_secret(self, account_id: int, secret: bytes | None) -> None:
        with self._write() as c:
            if c.execute(select(A.c.id).where(A.c.id == account_id)).first() is None:
                raise NotFound(str(account_id))
            c.execute(delete(AF).where(AF.c.account_id == account_id))
            if secret is None:
                return
            key_id, blob = self._keys.ring().encrypt(
                account_id.to_bytes(8, "big") + secret, crypto.AAD_TOTP)
            c.execute(insert(AF).values(account_id=account_id, key_id=key_id,
                                        totp_secret=blob, totp_last_step=None,
                                        created=utcnow()))

    def totp_factor(self, account_id: int) -> TotpFactor | None:
        # Read at every password login of a class using codes: fixed SQL.
        q = self._fixed("auth_factor.account_id", AF, "t.account_id = ?", " LIMIT 1")
        with self._dbapi(write=False) as cur:
            found = q.rows(cur, (account_id,))
        if not found:
            return None
        row = found[0]
        plain = self._decrypt(row.key_id, bytes(row.totp_secret), crypto.AAD_TOTP)
        if plain[:8] != account_id.to_bytes(8, "big"):
            raise crypto.DecryptionError("one-time code secret of another account")
        return TotpFactor(account_id=account_id, secret=plain[8:],
                          last_step=row.totp_last_step, created=row.created)

    def claim_totp_step(self, account_id: int, step: int) -> bool:
        # One conditional UPDATE: atomic on SQLite and PostgreSQL alike, so
        # two workers accepting the same code at once cannot both win.
        with self._write() as c:
            n = c.execute(
                update(AF)
                .where(AF.c.account_id == account_id,
                       or_(AF.c.totp_last_step.is_(None), AF.c.totp_last_step < step))
                .values(totp_last_step=step)
            ).rowcount
        return bool(n == 1)

    def add_mailbox(
        self,
        address: str,
        mailbox_type: MailboxType,
        *,
        display_name: str = "",
        owner_account_id: int | None = None,
        responsible: str = "",
        quota_bytes: int | None = None,
        private_seen: bool = False,
        description: str = "",
        service: str = "",
        unlisted: bool = False,
    ) -> Mailbox:
        for name, value in (("display_name", display_name), ("description", description),
                            ("service", service), ("responsible", responsible)):
            check_directory_text(name, value)
        address = address.lower()
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            raise NotFound(f"no domain in {address!r}")
        try:
            with self._write() as c:
                domain_id = c.execute(select(D.c.id).where(D.c.name == domain)).scalar()
                if domain_id is None:
                    raise NotFound(domain)
                if owner_account_id is not None:
                    if c.execute(select(A.c.id).where(A.c.id == owner_account_id)).first() is None:
                        raise NotFound(str(owner_account_id))
                if c.execute(select(M.c.id).where(M.c.address == address)).first() is not None:
                    raise AlreadyExists(address)
                base = int(time.time())
                mailbox_id = c.execute(
                    insert(M).values(
                        address=address,
                        domain_id=domain_id,
                        mailbox_type=mailbox_type,
                        display_name=display_name,
                        owner_account_id=owner_account_id,
                        responsible=responsible,
                        quota_bytes=quota_bytes,
                        active=True,
                        private_seen=private_seen,
                        description=description,
                        service=service,
                        unlisted=unlisted,
                        used_bytes=0,
                        used_messages=0,
                        last_uidvalidity=base + len(DEFAULT_FOLDERS) - 1,
                    )
                ).inserted_primary_key[0]
                c.execute(
                    insert(F),
                    [
                        {
                            "mailbox_id": mailbox_id,
                            "name": name,
                            "special_use": use,
                            "uidvalidity": base + i,
                            "uidnext": 1,
                            "highestmodseq": 1,
                        }
                        for i, (name, use) in enumerate(DEFAULT_FOLDERS)
                    ],
                )
                c.execute(
                    insert(S), [{"mailbox_id": mailbox_id, "name": n} for n, _ in DEFAULT_FOLDERS]
                )
        except sa_exc.IntegrityError as exc:
            raise AlreadyExists(address) from exc
        return Mailbox(
            id=mailbox_id,
            address=address,
            mailbox_type=mailbox_type,
            display_name=display_name,
            owner_account_id=owner_account_id,
            responsible=responsible,
            quota_bytes=quota_bytes,
            active=True,
            private_seen=private_seen,
            description=description,
            service=service,
            unlisted=unlisted,
        )

    def _mailboxes_by(self, column: str) -> FixedSelect:
        return self._fixed(f"mailbox.{column}", M, f"t.{column} = ?", " ORDER BY t.address")

    def _grants_of_account(self) -> FixedSelect:
        return self._fixed("grant.account_id", G, "t.account_id = ?", " ORDER BY t.id")

    def _mailboxes(self, column: str, value: object) -> list[Mailbox]:
        # RCPT TO, LOGIN and SELECT come here: fixed SQL (see `FixedSelect`).
        with self._dbapi(write=False) as cur:
            return [mailbox_record(r) for r in self._mailboxes_by(column).rows(cur, (value,))]

    def get_mailbox(self, address: str) -> Mailbox:
        found = self._mailboxes("address", address.lower())
        if not found:
            raise NotFound(address)
        return found[0]

    def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox:
        found = self._mailboxes("id", mailbox_id)
        if not found:
            raise NotFound(str(mailbox_id))
        return found[0]

    def find_mailbox(self, address: str) -> Mailbox | None:
        found = self._mailboxes("address", address.lower())
        return found[0] if found else None

    def list_mailboxes(self) -> list[Mailbox]:
        with self._read() as c:
            return [mailbox_record(r) for r in c.execute(select(M).order_by(M.c.address))]

    def mailboxes_owned_by(self, account_id: int) -> list[Mailbox]:
        return self._mailboxes("owner_account_id", account_id)

    def mailbox_access(self, account_id: int) -> MailboxAccess:
        # Every LOGIN: the namespaces in one read transaction of fixed SQL.
        owned = self._mailboxes_by("owner_account_id")
        grants = self._grants_of_account()
        shared = self._fixed(
            "mailbox.granted_to", M,
            "t.id IN (SELECT g.mailbox_id FROM grants g WHERE g.account_id = ?)")
        with self._dbapi(write=False) as cur:
            mine = [mailbox_record(r) for r in owned.rows(cur, (account_id,))]
            given = [grant_record(r) for r in grants.rows(cur, (account_id,))]
            boxes = {mb.id: mb for mb in map(mailbox_record, shared.rows(cur, (account_id,)))}
        return MailboxAccess(
            owned=mine,
            shared=[(g, boxes[g.mailbox_id]) for g in given if g.mailbox_id in boxes],
        )

    def set_mailbox_active(self, address: str, active: bool) -> None:
        with self._write() as c:
            n = c.execute(
                update(M).where(M.c.address == address.lower()).values(active=active)
            ).rowcount
            if n and not active:
                _bump_access_epoch(c)
        if n == 0:
            raise NotFound(address)

    def set_quota(self, mailbox_id: int, quota_bytes: int | None) -> None:
        with self._write() as c:
            n = c.execute(
                update(M).where(M.c.id == mailbox_id).values(quota_bytes=quota_bytes)
            ).rowcount
        if n == 0:
            raise NotFound(str(mailbox_id))

    def set_private_seen(self, address: str, private: bool) -> None:
        with self._write() as c:
            n = c.execute(
                update(M).where(M.c.address == address.lower()).values(private_seen=private)
            ).rowcount
        if n == 0:
            raise NotFound(address)

    def set_directory_fields(self, address: str, fields: DirectoryFields) -> Mailbox:
        values = fields.changed()
        for name, value in values.items():
            if isinstance(value, str):
                check_directory_text(name, value)
        address = address.lower()
        with self._write() as c:
            row = c.execute(select(M).where(M.c.address == address)).first()
            if row is None:
                raise NotFound(address)
            if values:
                c.execute(update(M).where(M.c.id == row.id).values(**values))
        return mailbox_record(row)

    def directory_entries(self) -> list[DirectoryEntry]:
        query = (
            select(M, A.c.login.label("owner_login"), A.c.idnat.label("owner_idnat"))
            .select_from(M.outerjoin(A, A.c.id == M.c.owner_account_id))
            .order_by(M.c.address)
        )
        with self._read() as c:
            return [DirectoryEntry(mailbox_record(r), r.owner_login, r.owner_idnat)
                    for r in c.execute(query)]

    def mailbox_usage(self, mailbox_id: int) -> tuple[int, int]:
        with self._read() as c:
            r = c.execute(
                select(M.c.used_bytes, M.c.used_messages).where(M.c.id == mailbox_id)
            ).first()
        if r is None:
            raise NotFound(str(mailbox_id))
        return int(r.used_bytes), int(r.used_messages)

    # -- grants ------------------------------------------------------------

    def set_grant(
        self,
        account_id: int,
        mailbox_id: int,
        rights: str,
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        send_as: bool | None = None,
    ) -> Grant:
        # Canonical form: each right once, in the RFC 4314 order of appearance.
        rights = "".join(dict.fromkeys(rights))
        with self._write() as c:
            if c.execute(select(A.c.id).where(A.c.id == account_id)).first() is None:
                raise NotFound(str(account_id))
            if c.execute(select(M.c.id).where(M.c.id == mailbox_id)).first() is None:
                raise NotFound(str(mailbox_id))
            where = and_(G.c.account_id == account_id, G.c.mailbox_id == mailbox_id)
            if send_as is None:
                had = c.execute(select(G.c.send_as).where(where)).first()
                send_as = bool(had.send_as) if had is not None else False
            if c.execute(delete(G).where(where)).rowcount:
                _bump_access_epoch(c)  # a grant replaced may have lost rights
            if not rights and not send_as:
                return Grant(0, account_id, mailbox_id, "", valid_from, valid_until)
            new_id = c.execute(
                insert(G).values(
                    account_id=account_id,
                    mailbox_id=mailbox_id,
                    rights=rights,
                    valid_from=valid_from,
                    valid_until=valid_until,
                    send_as=send_as,
                )
            ).inserted_primary_key[0]
        return Grant(new_id, account_id, mailbox_id, rights, valid_from, valid_until, send_as)

    def grants_for_account(self, account_id: int) -> list[Grant]:
        with self._dbapi(write=False) as cur:
            return [grant_record(r) for r in self._grants_of_account().rows(cur, (account_id,))]

    def grants_for_mailbox(self, mailbox_id: int) -> list[Grant]:
        with self._read() as c:
            rows = c.execute(select(G).where(G.c.mailbox_id == mailbox_id).order_by(G.c.id))
            return [grant_record(r) for r in rows]


def _bump_access_epoch(c: Any) -> None:
    """In the transaction that withdraws access (see `AccessEpochRow`)."""
    c.execute(update(AE).where(AE.c.id == 1).values(value=AE.c.value + 1))
