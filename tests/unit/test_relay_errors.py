"""The words a relay failure is recorded in stay bounded and printable,
whatever the peer replied."""

from __future__ import annotations

from mssmtpd.relayerrors import MAX_PEER_TEXT, smtp_refusal


def test_a_peer_reply_is_quoted_in_full_when_short() -> None:
    text = smtp_refusal("mx.b.test", "MAIL FROM", ["550-5.7.1 Go", "550 5.7.1 away"])
    assert text == "550 5.7.1 Go / 5.7.1 away (answer of mx.b.test to MAIL FROM)"


def test_a_huge_or_hostile_peer_reply_is_cut_and_cleaned() -> None:
    lines = ["550-" + "x\x1b[2J\x00" * 20000] * 199 + ["550 end"]
    text = smtp_refusal("mx.b.test", "RCPT TO", lines)
    assert len(text) < MAX_PEER_TEXT + 100
    assert text.isprintable() and text.startswith("550 ") and text.endswith("to RCPT TO)")
