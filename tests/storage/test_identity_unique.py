"""A card (IdNat_PS) or a certificate subject names one account, never two:
adding a second account with either is refused, and two accounts that share
one anyway (made before, or by hand) make the certificate log in as nobody,
not as whichever came first. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, update

from storage.interface import AccountClass, AlreadyExists
from storage.models import AccountRow

IDNAT = "810001234567"
SUBJECT = "CN=labo,OU=1234567890,O=Hopital,C=FR"


def test_a_second_account_with_the_same_card_or_subject_is_refused(any_store: Any) -> None:
    any_store.add_account("dr.martin@hopital.test", "Martin", AccountClass.PRACTITIONER,
                          idnat=IDNAT)
    any_store.add_account("labo@hopital.test", "Labo", AccountClass.SYSTEM, cert_subject=SUBJECT)
    with pytest.raises(AlreadyExists, match=f"IdNat_PS {IDNAT} is already account "
                                            "dr.martin@hopital.test's"):
        any_store.add_account("martin2@hopital.test", "Martin", AccountClass.PRACTITIONER,
                              idnat=IDNAT)
    with pytest.raises(AlreadyExists, match="certificate subject .* labo@hopital.test's "
                                            r"\(accounts may share one only when each"):
        any_store.add_account("labo2@hopital.test", "Labo", AccountClass.SYSTEM,
                              cert_subject=SUBJECT)
    assert [a.login for a in any_store.list_accounts()] == ["dr.martin@hopital.test",
                                                            "labo@hopital.test"]
    assert any_store.find_account_by_idnat(IDNAT).login == "dr.martin@hopital.test"
    assert any_store.find_account_by_cert_subject(SUBJECT).login == "labo@hopital.test"


def test_two_accounts_sharing_a_card_log_in_as_neither(
        any_store: Any, store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    any_store.add_account("dr.martin@hopital.test", "Martin", AccountClass.PRACTITIONER,
                          idnat=IDNAT, cert_subject=SUBJECT)
    other = any_store.add_account("intrus@hopital.test", "X", AccountClass.STAFF)
    engine = create_engine(store_url)  # as an old version, or a hand edit, could leave it
    try:
        with engine.begin() as conn:
            conn.execute(update(AccountRow).where(AccountRow.id == other.id)
                         .values(idnat=IDNAT, cert_subject=SUBJECT))
    finally:
        engine.dispose()
    assert any_store.find_account_by_idnat(IDNAT) is None
    assert any_store.find_account_by_cert_subject(SUBJECT) is None
    assert "share the idnat" in caplog.text and "intrus@hopital.test" in caplog.text


def test_boxes_of_one_structure_share_its_id_when_each_has_its_pin(any_store: Any) -> None:
    """The organisation id (OU) as subject of several APP boxes, each with
    its own certificate pinned: allowed; an unpinned one joining them: not."""
    ou = "1234567890"
    any_store.add_account("app-a@hopital.test", "A", AccountClass.SYSTEM, cert_subject=ou,
                          cert_pins=["a" * 64])
    any_store.add_account("app-b@hopital.test", "B", AccountClass.SYSTEM, cert_subject=ou,
                          cert_pins=["b" * 64])
    with pytest.raises(AlreadyExists):
        any_store.add_account("app-c@hopital.test", "C", AccountClass.SYSTEM, cert_subject=ou)
    # Unpinned certificates of that structure match nobody (two candidates).
    assert any_store.find_account_by_cert_subject(ou) is None
    assert any_store.find_account_by_cert_pin("b" * 64).login == "app-b@hopital.test"
