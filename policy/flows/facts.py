"""The facts of a flow that need the store, the settings or the whitelist.

`facts_for` is the one place they are looked up, for `mssctl policy explain`
today and for the daemons once the matrix is enforced: both then decide on
the same facts. It reads (never writes) the store: at most one account and
two mailbox lookups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from conf.settings import Settings
from policy.flows.model import AuthMethod, BoxState, FlowRequest
from storage.interface import Account, Mailbox

if TYPE_CHECKING:
    from policy.whitelist import Whitelist

CARD_KINDS = ("practitioner-card", "employee-card")


class FactStore(Protocol):
    """What facts_for reads: `storage.interface.MessageStore` has it (a
    caching wrapper may stand in)."""

    def find_mailbox(self, address: str) -> Mailbox | None: ...

    def get_account(self, login: str) -> Account: ...


class UnknownListener(ValueError):
    pass


def auth_method_of(method: str, cert_kind: str | None = None) -> AuthMethod:
    """The matrix's name of a login method: `Identity.method` ("password",
    "external", ...) and, for a certificate, `certs.identity` kind. A
    person's card is `card`; any other client certificate (organisation,
    server, unknown) is `org-certificate`."""
    m = method.strip().lower()
    if m == "external":
        return AuthMethod.CARD if cert_kind in CARD_KINDS else AuthMethod.ORG_CERTIFICATE
    if m in ("oauthbearer", "xoauth2"):
        return AuthMethod.TOKEN
    try:
        return AuthMethod(m)
    except ValueError:
        raise ValueError(f"unknown login method {method!r}") from None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def facts_for(
    store: FactStore,
    settings: Settings,
    whitelist: Whitelist | None,
    *,
    listener: str,
    sender: str,
    recipient: str,
    client_ip: str | None = None,
    account: Account | str | None = None,
    auth_method: AuthMethod | None = None,
    peer_dn: str | None = None,
    size: int | None = None,
) -> FlowRequest:
    """The `FlowRequest` of one (sender, recipient) pair.

    `account` is the authenticated account (or its login, then looked up:
    raises storage NotFound) and `auth_method` how it logged in; both None
    when not logged in. `recipient` "postmaster" (no domain) stands for
    postmaster of the first served domain, and a missing postmaster@<served
    domain> for `policy.postmaster`, as `Policy.check_rcpt` does.

    The whitelist counts only when `policy.enforce_whitelist` is true: without
    it (or without a list) the whitelist facts are unknown (None), and no
    `whitelisted`/`peer_whitelisted` condition matches, neither true nor false.

    Raises UnknownListener, ValueError (an account without a method or the
    reverse), and the store's errors (StoreUnavailable: decide again later).
    """
    roles = {lst.name: lst.role for lst in settings.listeners}
    if listener not in roles:
        raise UnknownListener(f"unknown listener {listener!r}; the settings define "
                              f"{', '.join(roles)}")
    if (account is None) != (auth_method is None):
        raise ValueError("account and auth_method go together (both None: not logged in)")
    acc = store.get_account(account.strip().lower()) if isinstance(account, str) else account
    wl = whitelist if settings.policy.enforce_whitelist else None

    sender = sender.strip()
    sender_domain = _domain(sender) if sender else ""
    sender_local = bool(sender_domain) and settings.is_local_domain(sender_domain)
    sender_box = store.find_mailbox(sender.lower()) if sender_local else None

    peer_whitelisted: bool | None = None
    if wl is not None:
        if peer_dn is None:
            peer_whitelisted = False
        elif sender_domain:
            peer_whitelisted = wl.allows(sender_domain, peer_dn)
        else:  # null sender: the operator must be listed for some domain
            peer_whitelisted = wl.lists_operator(peer_dn)

    rcpt = recipient.strip()
    if rcpt.lower() == "postmaster":
        rcpt = f"postmaster@{settings.domains[0]}"
    rcpt_domain = _domain(rcpt)
    rcpt_local = settings.is_local_domain(rcpt_domain)
    box: Mailbox | None = None
    state: BoxState | None = None
    if rcpt_local:
        box = store.find_mailbox(rcpt.lower())
        postmaster = settings.policy.postmaster
        if box is None and postmaster and rcpt.partition("@")[0].lower() == "postmaster":
            box = store.find_mailbox(postmaster.strip().lower())
        state = (BoxState.MISSING if box is None
                 else BoxState.ACTIVE if box.active else BoxState.DISABLED)

    return FlowRequest(
        listener=listener,
        role=roles[listener],
        sender=sender,
        recipient=rcpt,
        client_ip=client_ip,
        account=acc.login if acc is not None else None,
        account_class=acc.account_class if acc is not None else None,
        auth_method=auth_method,
        sender_local=sender_local,
        sender_box_type=sender_box.mailbox_type if sender_box is not None else None,
        peer_dn=peer_dn,
        peer_whitelisted=peer_whitelisted,
        recipient_local=rcpt_local,
        recipient_whitelisted=wl.has_domain(rcpt_domain) if wl is not None else None,
        recipient_box_type=box.mailbox_type if box is not None else None,
        recipient_box_state=state,
        size=size,
    )
