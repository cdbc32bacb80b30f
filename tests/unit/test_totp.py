"""policy.totp: RFC 6238 codes as authenticator apps compute them."""

from __future__ import annotations

import urllib.parse

import pytest

from policy import totp

RFC_SECRET = b"12345678901234567890"  # RFC 6238 appendix B, SHA-1


@pytest.mark.parametrize(("now", "code"), [
    (59, "287082"), (1111111109, "081804"), (1111111111, "050471"),
    (1234567890, "005924"), (2000000000, "279037"), (20000000000, "353130"),
])
def test_rfc6238_vectors_truncated_to_six_digits(now: int, code: str) -> None:
    assert totp.code_at(RFC_SECRET, totp.time_step(now)) == code


def test_one_step_of_drift_either_way() -> None:
    now = 1111111111.0
    step = totp.time_step(now)
    for delta in (-1, 0, 1):
        assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, step + delta), now) == step + delta
    for delta in (-2, 2):
        assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, step + delta), now) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "１２３４５６", " 12345"])
def test_malformed_codes_never_match(code: str) -> None:
    assert totp.matching_step(RFC_SECRET, code, 59) is None


@pytest.mark.parametrize(("text", "split"), [
    ("s3cret123456", ("s3cret", "123456")),
    ("a000000", ("a", "000000")),
    ("123456", None),  # nothing before the code
    ("s3cret12345", None),  # 5 digits only
    ("s3cret12345x", None),
    ("pässwort٣٢١٠٠٠", None),  # non-ASCII digits are not a code
])
def test_split_code(text: str, split: tuple[str, str] | None) -> None:
    assert totp.split_code(text) == split


def test_provisioning_uri() -> None:
    uri = totp.provisioning_uri(RFC_SECRET, "sec.durand@hopital.test", "hopital.test")
    parts = urllib.parse.urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert urllib.parse.unquote(parts.path) == "/hopital.test:sec.durand@hopital.test"
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert query == {"secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "issuer": "hopital.test",
                     "algorithm": "SHA1", "digits": "6", "period": "30"}


def test_new_secrets_are_160_bits_and_differ() -> None:
    a, b = totp.new_secret(), totp.new_secret()
    assert len(a) == 20 and a != b
