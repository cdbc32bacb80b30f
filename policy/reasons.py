"""Why the policy decided as it did: one enum for every `Decision.reason`.

Each protocol maps a reason to its reply once (`mssmtpd.replies`,
`imapd/errors.py`), and a test checks that every reason is either mapped by
SMTP or listed there as one SMTP never answers. The values are the words of
the audit log's `reason` field (a `StrEnum`: a member equals its value).
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    OK = "ok"

    # -- SMTP envelope (MAIL, RCPT) and the trust space
    UNKNOWN_RECIPIENT = "unknown-recipient"
    MAILBOX_DISABLED = "mailbox-disabled"
    RELAY_DENIED = "relay-denied"
    NOT_WHITELISTED = "not-whitelisted"  # domain or peer operator not in the whitelist
    SENDER_NOT_OWNED = "sender-not-owned"
    AUTH_REQUIRED = "auth-required"
    NO_CERTIFICATE = "no-certificate"  # (MX peer, or EXTERNAL without a certificate)
    NOT_REQUIRED = "not-required"  # audit only: a peer check skipped by configuration
    DN_MISMATCH = "dn-mismatch"  # outbound: the receiving MTA is not the listed operator
    STORE_UNAVAILABLE = "store-unavailable"

    # -- the flow matrix (the rule and its reply are in `Decision.flow`)
    FLOW_DENIED = "flow-denied"
    FLOW_TEMPFAIL = "flow-tempfail"
    LISTENER_GONE = "listener-gone"  # audit only: a queued message's listener was removed

    # -- submission's From: header
    FROM_UNREADABLE = "from-unreadable"
    FROM_NOT_OWNED = "from-not-owned"

    # -- logins
    BAD_CREDENTIALS = "bad-credentials"
    ACCOUNT_DISABLED = "account-disabled"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    UNKNOWN_CERTIFICATE = "unknown-certificate"
    AUTHZID_MISMATCH = "authzid-mismatch"
    CERTIFICATE_NOT_PINNED = "certificate-not-pinned"  # policy.certmap
    # policy.throttle: answered exactly like a wrong password
    ACCOUNT_LOCKED = "account-locked"
    ADDRESS_LOCKED = "address-locked"
    TOTP_MISSING = "totp-missing"
    TOTP_INVALID = "totp-invalid"
    TOTP_REPLAYED = "totp-replayed"
    MALFORMED_SASL = "malformed-sasl"
    # identity-provider tokens (`policy.tokens.TokenError` reasons, prefixed)
    UNKNOWN_USER = "unknown-user"
    IDP_UNAVAILABLE = "idp-unavailable"  # TEMPFAIL: never a wrong password
    TOKEN_MALFORMED = "token-malformed"
    TOKEN_ALGORITHM = "token-algorithm"
    TOKEN_UNKNOWN_KEY = "token-unknown-key"
    TOKEN_BAD_SIGNATURE = "token-bad-signature"
    TOKEN_WRONG_ISSUER = "token-wrong-issuer"
    TOKEN_WRONG_AUDIENCE = "token-wrong-audience"
    TOKEN_EXPIRED = "token-expired"
    TOKEN_NOT_YET_VALID = "token-not-yet-valid"
    TOKEN_NO_LOGIN_CLAIM = "token-no-login-claim"
    TOKEN_UNVERIFIED_EMAIL = "token-unverified-email"
    TOKEN_INACTIVE = "token-inactive"

    # -- mailboxes (RFC 4314) and open sessions
    NO_ACCESS = "no-access"  # visible ("l") but the right is missing
    NOT_VISIBLE = "not-visible"  # no "l": answered exactly like a missing mailbox
    UNKNOWN_IDENTIFIER = "unknown-identifier"  # SETACL
    OWNER_RIGHTS_FIXED = "owner-rights-fixed"
    UNKNOWN_RIGHT = "unknown-right"
    MAILBOX_WITHDRAWN = "mailbox-withdrawn"  # the selected mailbox: grant gone, box disabled

    @classmethod
    def of_token(cls, why: str) -> Reason:
        """The reason of a refused token (`TokenError.reason`); an unknown
        word is a malformed token."""
        try:
            return cls(f"token-{why}")
        except ValueError:
            return cls.TOKEN_MALFORMED


__all__ = ["Reason"]
