"""`mssctl init`'s demo passwords are pasted into command lines: they must
never read as an option there (one beginning with "-" did, one time in 64,
and `mssctl account add --password -x...` or `swaks --auth-password -x...`
then failed), nor need quoting in a shell."""

from __future__ import annotations

import string

from mssctl.init import PASSWORD_LENGTH, _new_password


def test_demo_passwords_are_letters_and_digits_only() -> None:
    allowed = set(string.ascii_letters + string.digits)
    seen = {_new_password() for _ in range(2000)}
    assert len(seen) == 2000  # random, not one fixed value
    for password in seen:
        assert len(password) == PASSWORD_LENGTH
        assert set(password) <= allowed, password
