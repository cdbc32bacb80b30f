"""`mssmtpd.replies.reply_for_reason`: the one map from policy reasons to SMTP
replies, including the peer operator check's."""

from __future__ import annotations

from mssmtpd.replies import PEER_REPLIES, POLICY_REPLIES, R, reply_for_reason


def test_a_peer_operator_not_listed_is_not_trusted() -> None:
    assert reply_for_reason("not-whitelisted", default=R.SENDER_DENIED, peer=True) is (
        R.PEER_NOT_TRUSTED)


def test_a_peer_operator_without_certificate_is_told_one_is_required() -> None:
    reply = reply_for_reason("no-certificate", default=R.SENDER_DENIED, peer=True)
    assert reply is R.PEER_CERT_REQUIRED
    assert reply != R.PEER_NOT_TRUSTED
    assert (reply.code, reply.status) == (530, "5.7.0")
    assert "certificate is required" in reply.text


def test_the_same_reasons_elsewhere_keep_their_own_reply() -> None:
    # RCPT to a domain outside the trust space, AUTH EXTERNAL without a certificate.
    assert reply_for_reason("not-whitelisted", default=R.RELAY_DENIED) is R.NOT_WHITELISTED
    assert reply_for_reason("no-certificate") is R.CLIENT_CERT_REQUIRED


def test_peer_check_falls_back_on_the_common_table_and_default() -> None:
    assert reply_for_reason("sender-not-owned", peer=True) is R.SENDER_NOT_OWNED
    assert reply_for_reason("something-new", default=R.SENDER_DENIED, peer=True) is (
        R.SENDER_DENIED)


def test_temporary_always_answers_4xx() -> None:
    for reason in (*POLICY_REPLIES, *PEER_REPLIES):
        for peer in (False, True):
            reply = reply_for_reason(reason, temporary=True, peer=peer)
            assert reply is R.STORE_UNAVAILABLE and reply.temporary
