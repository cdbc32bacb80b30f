"""Every policy reason has its place in the SMTP reply catalogue: mapped by
POLICY_REPLIES (PEER_REPLIES refines two of them at MAIL on MX), or listed
in NOT_MAPPED with why. A new reason must be placed, not fall through to a
generic "Transaction failed"."""

from __future__ import annotations

from mssmtpd.replies import NOT_MAPPED, PEER_REPLIES, POLICY_REPLIES, R, reply_for_reason
from policy.reasons import Reason


def test_every_reason_is_mapped_or_said_not_to_be() -> None:
    mapped, unmapped = set(POLICY_REPLIES), set(NOT_MAPPED)
    assert mapped & unmapped == set()
    assert mapped | unmapped == set(Reason), sorted(set(Reason) - mapped - unmapped)
    assert set(PEER_REPLIES) <= mapped


def test_reasons_are_their_audit_words() -> None:
    assert Reason.NOT_WHITELISTED == "not-whitelisted"
    assert Reason.of_token("expired") is Reason.TOKEN_EXPIRED
    assert Reason.of_token("something-new") is Reason.TOKEN_MALFORMED


def test_peer_reasons_get_the_peer_replies_and_a_tempfail_is_always_4xx() -> None:
    assert reply_for_reason(Reason.NO_CERTIFICATE, peer=True) == R.PEER_CERT_REQUIRED
    assert reply_for_reason(Reason.NO_CERTIFICATE) == R.CLIENT_CERT_REQUIRED
    assert reply_for_reason(Reason.UNKNOWN_RECIPIENT, temporary=True).code // 100 == 4
