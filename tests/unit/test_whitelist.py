"""policy.whitelist: the national list parser."""

from __future__ import annotations

import pytest

from policy.whitelist import Whitelist, WhitelistError, load_or_keep, normalise_dn

HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
OP_A = "CN=mx.operateur-a.fr,OU=1750000001,O=Operateur A,ST=Paris (75),C=FR"
OP_B = "CN=mx2.operateur-b.fr,OU=1690000002,O=Operateur B,ST=Rhone (69),C=FR"


def domaine(nom: str, dn: str | None) -> str:
    dn_el = f"<DNCertificatOperateur>{dn}</DNCertificatOperateur>" if dn is not None else ""
    return (f"<Domaine><Nom>{nom}</Nom><Description>d</Description>{dn_el}"
            "<ResponsableContact>r@x.fr</ResponsableContact>"
            "<SupportContact>s@x.fr</SupportContact><DateMAJ>2026-01-01</DateMAJ></Domaine>")


def document(*domaines: str, root: str = 'ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"') -> bytes:
    tag = root.split()[0]
    return (HEAD + f"<{root}><DateDeGeneration>2026-11-27T03:00:00</DateDeGeneration>"
            f"<ListeDomaines>{''.join(domaines)}</ListeDomaines></{tag}>").encode()


def test_parse_domains_and_several_dns_per_domain():
    wl = Whitelist.parse(document(
        domaine("ch-demo.mssante.fr", OP_A),
        domaine("ch-demo.mssante.fr", OP_B),
        domaine("Cabinet.MSSante.fr", OP_B),
    ))
    assert wl.generated == "2026-11-27T03:00:00"
    assert wl.has_domain("ch-demo.mssante.fr")
    assert wl.has_domain("CABINET.mssante.fr.")
    assert not wl.has_domain("gmail.com")
    assert wl.allows("ch-demo.mssante.fr", OP_A)
    assert wl.allows("ch-demo.mssante.fr", OP_B)
    assert wl.allows("cabinet.mssante.fr", OP_B)
    assert not wl.allows("cabinet.mssante.fr", OP_A)  # DN listed for another domain only
    assert not wl.allows("unknown.fr", OP_A)
    assert len(wl.domains["ch-demo.mssante.fr"]) == 2


def test_dn_comparison_is_tolerant_but_exact_on_content():
    wl = Whitelist.parse(document(domaine("a.fr", OP_A)))
    assert wl.allows("a.fr", "cn=MX.operateur-a.fr, OU=1750000001 ,O=Operateur  A,S=Paris (75),C=FR")
    # printed country first
    assert wl.allows("a.fr", "C=FR,ST=Paris (75),O=Operateur A,OU=1750000001,CN=mx.operateur-a.fr")
    assert not wl.allows("a.fr", OP_A.replace("1750000001", "1750000009"))
    assert not wl.allows("a.fr", "CN=mx.operateur-a.fr,OU=1750000001,O=Operateur A,C=FR")


def test_escaped_comma_in_dn():
    dn = r"CN=mx.a.fr,OU=1,O=Clinique du Parc\, Lyon,C=FR"
    wl = Whitelist.parse(document(domaine("a.fr", dn)))
    assert wl.allows("a.fr", dn)
    assert not wl.allows("a.fr", "CN=mx.a.fr,OU=1,O=Clinique du Parc,C=FR")
    assert normalise_dn(dn).count(",") == 4  # the escaped comma is not a separator


def test_wrong_namespace_refused():
    with pytest.raises(WhitelistError, match="namespace"):
        Whitelist.parse(document(domaine("a.fr", OP_A), root="ListeBlancheMSSante"))
    with pytest.raises(WhitelistError):
        Whitelist.parse(document(root='Other xmlns="https://listeblanche.mssante.fr/schema"'))


def test_broken_xml_refused_and_caller_keeps_last_good(tmp_path):
    path = tmp_path / "wl.xml"
    path.write_bytes(document(domaine("a.fr", OP_A)))
    good, problem = load_or_keep(path, None)
    assert problem is None and good is not None and good.has_domain("a.fr")
    path.write_bytes(document(domaine("a.fr", OP_A))[:-20])  # truncated download
    kept, problem = load_or_keep(path, good)
    assert kept is good
    assert "not well-formed" in problem
    path.unlink()
    kept, problem = load_or_keep(path, good)
    assert kept is good and problem


def test_domaine_without_nom_refused():
    with pytest.raises(WhitelistError, match="no Nom"):
        Whitelist.parse(document(domaine("", OP_A)))


def test_domain_without_dn_listed_but_allows_no_operator():
    wl = Whitelist.parse(document(domaine("a.fr", None)))
    assert wl.has_domain("a.fr")
    assert not wl.allows("a.fr", OP_A)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGeneration>&lol2;</DateDeGeneration></ListeBlancheMSSante>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x SYSTEM "file:///etc/passwd">
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"/>"""


@pytest.mark.parametrize("data", [
    BILLION_LAUGHS,
    EXTERNAL,
    # same attack in UTF-16: a byte search for "<!DOCTYPE" would miss it
    BILLION_LAUGHS.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>')
    .decode().encode("utf-16"),
])
def test_dtd_and_entities_refused(data):
    with pytest.raises(WhitelistError, match="DTD"):
        Whitelist.parse(data)


def test_undeclared_entity_refused():
    with pytest.raises(WhitelistError):
        Whitelist.parse(document(domaine("a.fr", "CN=&xxe;")))


def test_large_list_parses():
    entries = []
    for i in range(6500):
        dom = f"etab{i % 5000}.mssante.fr"
        entries.append(domaine(dom, f"CN=mx{i}.op{i % 40}.fr,OU={1000000000 + i},O=Op {i % 40},ST=Dept,C=FR"))
    data = document(*entries)
    wl = Whitelist.parse(data)
    assert len(wl.domains) == 5000
    assert wl.entry_count == 6500
    assert wl.allows("etab1.mssante.fr", "CN=mx5001.op1.fr,OU=1000005001,O=Op 1,ST=Dept,C=FR")
