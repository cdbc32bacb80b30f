"""certs.tls: real handshakes on 127.0.0.1 (port 0) and in-memory Twisted TLS."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from OpenSSL import SSL
from pki import copy_pki, tls_settings
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from certs.devpki import make_crl
from certs.tls import ServerTLS, TLSConfigError, peer_certificate, tls_info
from conf.settings import ClientCertMode, ListenerSettings

TRUST_SPACE_SUITES = [
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES128-SHA256",
]


def listener(mode: ClientCertMode, name: str = "imaps") -> ListenerSettings:
    return ListenerSettings(name=name, port=0, role="imap", tls="implicit", client_cert=mode)


@dataclass
class ServerResult:
    error: BaseException | None = None
    peer: Any = None
    info: tuple[str, str] | None = None
    done: threading.Event = field(default_factory=threading.Event)


def serve_once(ctx: SSL.Context) -> tuple[int, ServerResult, threading.Thread]:
    """Accept one connection on 127.0.0.1:0 and run the server handshake."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(10)
    result = ServerResult()

    def run() -> None:
        try:
            sock, _ = lsock.accept()
            sock.settimeout(None)
            conn = SSL.Connection(ctx, sock)
            conn.set_accept_state()
            try:
                conn.do_handshake()
                result.peer = conn.get_peer_certificate(as_cryptography=True)
                result.info = (conn.get_protocol_version_name(), conn.get_cipher_name())
                conn.sendall(b"ok\n")
                conn.shutdown()
            except BaseException as exc:  # recorded for the test
                result.error = exc
            finally:
                sock.close()
        except BaseException as exc:
            result.error = exc
        finally:
            lsock.close()
            result.done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lsock.getsockname()[1], result, t


def client_context(pki, cert=None, *, max_version=None, min_version=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.ca_bundle))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def handshake(server_ctx: SSL.Context, client_ctx: ssl.SSLContext, hostname="localhost"):
    """(client error or None, ServerResult, client-side (version, cipher))."""
    port, result, t = serve_once(server_ctx)
    client_error = None
    client_info = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=hostname) as s:
                client_info = (s.version(), s.cipher()[0])
                # TLS 1.3 sends the client-certificate verdict after the client's
                # Finished: reading forces it.
                if s.recv(3) != b"ok\n":
                    raise ConnectionError("no greeting")
    except (ssl.SSLError, OSError) as exc:
        client_error = exc
    t.join(10)
    assert result.done.is_set()
    return client_error, result, client_info


@pytest.fixture(scope="module")
def server_tls(dev_pki):
    return ServerTLS(tls_settings(dev_pki))


def ctx_for(server_tls, mode):
    return server_tls.server_context_factory(listener(mode)).getContext()


def test_card_accepted_when_required(dev_pki, server_tls):
    err, res, info = handshake(ctx_for(server_tls, ClientCertMode.REQUIRED),
                               client_context(dev_pki, dev_pki.practitioner))
    assert err is None and res.error is None
    assert res.peer is not None
    assert "810002813839" in res.peer.subject.rfc4514_string()
    assert info[0] in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("who", ["employee", "organisation"])
def test_other_demo_certs_accepted(dev_pki, server_tls, who):
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.REQUIRED),
                            client_context(dev_pki, getattr(dev_pki, who)))
    assert err is None and res.error is None and res.peer is not None


def test_revoked_card_refused(dev_pki, server_tls):
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.OPTIONAL),
                            client_context(dev_pki, dev_pki.revoked))
    assert res.error is not None
    assert res.peer is None


def test_revoked_card_accepted_without_crls(dev_pki):
    # Control for the test above: the refusal comes from the CRL, not the chain.
    tls = ServerTLS(tls_settings(dev_pki, crl=False))
    err, res, _ = handshake(ctx_for(tls, ClientCertMode.REQUIRED),
                            client_context(dev_pki, dev_pki.revoked))
    assert err is None and res.error is None


def test_untrusted_client_cert_refused(dev_pki, server_tls, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("intruder@evil.test")
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "c.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    ctx = client_context(dev_pki)
    ctx.load_cert_chain(str(cert_file), str(key_file))
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.OPTIONAL), ctx)
    assert res.error is not None and res.peer is None


def test_required_without_certificate_refused(dev_pki, server_tls):
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.REQUIRED), client_context(dev_pki))
    assert res.error is not None


def test_optional_without_certificate_accepted(dev_pki, server_tls):
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.OPTIONAL), client_context(dev_pki))
    assert err is None and res.error is None and res.peer is None


def test_mode_none_does_not_ask(dev_pki, server_tls):
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.NONE),
                            client_context(dev_pki, dev_pki.practitioner))
    assert err is None and res.peer is None


def test_server_cert_names_localhost_and_loopback_ip(dev_pki, server_tls):
    for name in ("localhost", "127.0.0.1", "mx.hopital.test"):
        err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.NONE), client_context(dev_pki),
                                hostname=name)
        assert err is None, name


@pytest.mark.parametrize("suite", TRUST_SPACE_SUITES)
def test_trust_space_suites_under_tls12(dev_pki, server_tls, suite):
    ctx = client_context(dev_pki, max_version=ssl.TLSVersion.TLSv1_2, ciphers=suite)
    err, res, info = handshake(ctx_for(server_tls, ClientCertMode.NONE), ctx)
    assert err is None and res.error is None
    assert info == ("TLSv1.2", suite)
    assert res.info == ("TLSv1.2", suite)


@pytest.mark.parametrize("suite", ["AES256-GCM-SHA384", "ECDHE-RSA-AES256-SHA",
                                   "ECDHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES256-GCM-SHA384"])
def test_other_tls12_suites_refused(dev_pki, server_tls, suite):
    ctx = client_context(dev_pki, max_version=ssl.TLSVersion.TLSv1_2, ciphers=suite)
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.NONE), ctx)
    assert err is not None and res.error is not None


def test_tls13_allowed(dev_pki, server_tls):
    ctx = client_context(dev_pki, min_version=ssl.TLSVersion.TLSv1_3)
    err, res, info = handshake(ctx_for(server_tls, ClientCertMode.NONE), ctx)
    assert err is None and info[0] == "TLSv1.3"


def _tls11_client(pki):
    ctx = client_context(pki, max_version=ssl.TLSVersion.TLSv1_1,
                         min_version=ssl.TLSVersion.TLSv1, ciphers="ALL:@SECLEVEL=0")
    return ctx


def test_tls11_refused(dev_pki, server_tls):
    err, res, _ = handshake(ctx_for(server_tls, ClientCertMode.NONE), _tls11_client(dev_pki))
    assert err is not None and res.error is not None


def test_tls11_client_is_able_to_speak_tls11(dev_pki):
    """Control: a deliberately weak server does accept that client, so the refusal
    above is ours (skipped if neither OpenSSL build can do TLS 1.1 at all)."""
    weak = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        weak.set_min_proto_version(SSL.TLS1_1_VERSION)
        weak.set_cipher_list(b"ALL:@SECLEVEL=0")
    except SSL.Error:
        pytest.skip("this OpenSSL cannot configure TLS 1.1")
    weak.use_certificate_chain_file(str(dev_pki.server.cert))
    weak.use_privatekey_file(str(dev_pki.server.key))
    err, res, info = handshake(weak, _tls11_client(dev_pki))
    if err is not None:
        pytest.skip(f"TLS 1.1 unavailable in this OpenSSL build: {type(err).__name__}")
    assert info[0] == "TLSv1.1"


def test_min_version_13_setting(dev_pki):
    tls = ServerTLS(tls_settings(dev_pki, min_version="TLSv1.3"))
    ctx = client_context(dev_pki, max_version=ssl.TLSVersion.TLSv1_2)
    err, res, _ = handshake(ctx_for(tls, ClientCertMode.NONE), ctx)
    assert err is not None


def test_bad_key_is_a_config_error(dev_pki):
    with pytest.raises(TLSConfigError):
        ServerTLS(tls_settings(dev_pki, key_file=dev_pki.practitioner.key))


def test_reload_picks_up_new_crl(dev_pki, tmp_path):
    pki = copy_pki(dev_pki, tmp_path)
    tls = ServerTLS(tls_settings(pki))
    factory = tls.server_context_factory(listener(ClientCertMode.REQUIRED))
    err, res, _ = handshake(factory.getContext(), client_context(pki, pki.practitioner))
    assert res.error is None
    from cryptography import x509

    prac = x509.load_pem_x509_certificates(pki.practitioner.cert.read_bytes())[0]
    now = dt.datetime.now(dt.UTC)
    make_crl(pki.persons_ca_cert, pki.persons_ca_key, pki.crl_files[1], [prac.serial_number],
             last_update=now, next_update=now + dt.timedelta(days=1))
    assert tls.reload() == []
    err, res, _ = handshake(factory.getContext(), client_context(pki, pki.practitioner))
    assert res.error is not None
    # A broken key file on reload keeps the running certificate.
    pki.server.key.write_text("broken")
    problems = tls.reload()
    assert any("keeping the running certificate" in p for p in problems)
    err, res, _ = handshake(factory.getContext(), client_context(pki, pki.employee))
    assert err is None and res.error is None


def test_expired_crl_still_refuses_revoked_and_accepts_others(dev_pki, tmp_path):
    pki = copy_pki(dev_pki, tmp_path)
    from cryptography import x509

    revoked = x509.load_pem_x509_certificates(pki.revoked.cert.read_bytes())[0]
    now = dt.datetime.now(dt.UTC)
    make_crl(pki.persons_ca_cert, pki.persons_ca_key, pki.crl_files[1], [revoked.serial_number],
             last_update=now - dt.timedelta(days=9), next_update=now - dt.timedelta(days=1))
    tls = ServerTLS(tls_settings(pki))
    assert any("expired" in p for p in tls.trust.problems())
    ctx = ctx_for(tls, ClientCertMode.REQUIRED)
    err, res, _ = handshake(ctx, client_context(pki, pki.practitioner))
    assert err is None and res.error is None
    err, res, _ = handshake(ctx, client_context(pki, pki.revoked))
    assert res.error is not None


# ---------------------------------------------------------------- Twisted, in memory


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


def twisted_pair(server_creator, client_creator):
    server_wrapped = Recorder()
    client_wrapped = Recorder()
    clock = Clock()  # the TLS layer batches small writes with callLater(0)
    sf = TLSMemoryBIOFactory(server_creator, False, Factory.forProtocol(lambda: server_wrapped),
                             clock=clock)
    cf = TLSMemoryBIOFactory(client_creator, True, Factory.forProtocol(lambda: client_wrapped),
                             clock=clock)
    sp = sf.buildProtocol(None)
    cp = cf.buildProtocol(None)
    pump = iosim.connect(sp, iosim.makeFakeServer(sp), cp, iosim.makeFakeClient(cp), clock=clock)
    return server_wrapped, client_wrapped, pump


def test_relay_mutual_tls_and_transport_helpers(dev_pki, server_tls):
    peer = ServerTLS(tls_settings(dev_pki, cert_file=dev_pki.peer_operator.cert,
                                  key_file=dev_pki.peer_operator.key))
    server, client, pump = twisted_pair(
        server_tls.server_context_factory(listener(ClientCertMode.REQUIRED, "mx")),
        peer.client_creator("mx.hopital.test"),
    )
    client.transport.write(b"EHLO\r\n")
    pump.flush()
    assert server.data == b"EHLO\r\n"
    cert = peer_certificate(server.transport)
    assert cert is not None
    assert "mx.operateur-pair.test" in cert.subject.rfc4514_string()
    version, cipher = tls_info(server.transport)
    assert version in ("TLSv1.2", "TLSv1.3")
    assert tls_info(client.transport) == (version, cipher)
    # the relay side sees our server certificate
    assert "mx.hopital.test" in peer_certificate(client.transport).subject.rfc4514_string()


def test_relay_refuses_wrong_hostname(dev_pki, server_tls):
    peer = ServerTLS(tls_settings(dev_pki, cert_file=dev_pki.peer_operator.cert,
                                  key_file=dev_pki.peer_operator.key))
    server, client, pump = twisted_pair(
        server_tls.server_context_factory(listener(ClientCertMode.OPTIONAL, "mx")),
        peer.client_creator("mx.other.test"),
    )
    client.transport.write(b"EHLO\r\n")
    pump.flush()
    assert server.data == b""
    assert client.lost is not None


def test_relay_refuses_untrusted_server(dev_pki, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert_file, key_file = tmp_path / "s.pem", tmp_path / "s.key"
    cert_file.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))
    evil = ServerTLS(tls_settings(dev_pki, cert_file=cert_file, key_file=key_file))
    ours = ServerTLS(tls_settings(dev_pki))
    server, client, pump = twisted_pair(
        evil.server_context_factory(listener(ClientCertMode.NONE, "mx")),
        ours.client_creator("localhost"),
    )
    client.transport.write(b"EHLO\r\n")
    pump.flush()
    assert server.data == b""
    assert client.lost is not None


def test_helpers_without_tls():
    from twisted.internet.testing import StringTransport

    t = StringTransport()
    assert peer_certificate(t) is None
    assert tls_info(t) is None


def test_missing_crl_for_a_ca_fails_closed(dev_pki):
    # Only the root and organisations CRLs: cards (persons CA) cannot be
    # checked for revocation and are refused; organisation certificates pass.
    root_crl, _persons_crl, orgs_crl = dev_pki.crl_files
    tls = ServerTLS(tls_settings(dev_pki, crl_files=[root_crl, orgs_crl]))
    ctx = ctx_for(tls, ClientCertMode.REQUIRED)
    err, res, _ = handshake(ctx, client_context(dev_pki, dev_pki.practitioner))
    assert res.error is not None
    err, res, _ = handshake(ctx, client_context(dev_pki, dev_pki.organisation))
    assert err is None and res.error is None


def test_reload_rereads_the_ca_files(dev_pki, tmp_path):
    """A CA added to tls.ca_files (with its CRL) is trusted by new contexts
    after reload; a CA file broken later keeps the running anchors."""
    from certs.devpki import issue_card, make_root_ca

    pki = copy_pki(dev_pki, tmp_path)
    extra_ca, extra_key = make_root_ca(tmp_path / "extra", "extra-ca", "AC AJOUTEE")
    card = issue_card(tmp_path / "extra", "card", ca_cert=extra_ca, ca_key=extra_key,
                      idnat="810000000555", surname="AJOUT", given_name="E")
    extra_crl = make_crl(extra_ca, extra_key, tmp_path / "extra" / "extra-crl.pem")
    ca_file = tmp_path / "cas.pem"
    ca_file.write_bytes(pki.ca_bundle.read_bytes())
    tls = ServerTLS(tls_settings(pki, ca_files=[ca_file],
                                 crl_files=[*pki.crl_files, extra_crl]))
    factory = tls.server_context_factory(listener(ClientCertMode.REQUIRED))
    _, res, _ = handshake(factory.getContext(), client_context(pki, card))
    assert res.error is not None  # not trusted yet

    ca_file.write_bytes(pki.ca_bundle.read_bytes() + extra_ca.read_bytes())
    assert tls.reload() == []
    assert (tls.reloaded["ca_files"], tls.reloaded["certificate"]) == ("reloaded", "reloaded")
    assert tls.reloaded["cas_without_crl"] == []
    _, res, _ = handshake(factory.getContext(), client_context(pki, card))
    assert res.error is None

    ca_file.write_text("not a certificate")
    problems = tls.reload()
    assert any("keeping the running CA certificates" in p for p in problems), problems
    assert tls.reloaded["ca_files"] == "kept"
    _, res, _ = handshake(factory.getContext(), client_context(pki, card))
    assert res.error is None


def test_a_failed_relay_handshake_is_explained_by_the_callback_s_own_refusal(dev_pki, tmp_path):
    """The peer MTA's CA is trusted without a CRL (`tls.missing_crl: accept`)
    and its certificate names another host. The verify callback let the
    missing CRL pass and refused the name: the queue's words must say so,
    not re-verify the chain and blame the CRL."""
    from conf.settings import MissingCRL
    from mssmtpd.relayerrors import tls_failure

    ca = trustme.CA()
    ca_file = tmp_path / "peer-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("mx.other.test")
    cert_file, key_file = tmp_path / "s.pem", tmp_path / "s.key"
    cert_file.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))
    peer = ServerTLS(tls_settings(dev_pki, cert_file=cert_file, key_file=key_file))
    ours = ServerTLS(tls_settings(dev_pki, ca_files=[dev_pki.ca_bundle, ca_file],
                                  missing_crl=MissingCRL.ACCEPT))
    creator = ours.client_creator("localhost")
    made: list[SSL.Connection] = []  # the relay keeps its connection (mssmtpd.client)
    make = creator.clientConnectionForTLS
    creator.clientConnectionForTLS = lambda proto: made.append(make(proto)) or made[-1]
    server, client, pump = twisted_pair(
        peer.server_context_factory(listener(ClientCertMode.NONE, "mx")), creator)
    client.transport.write(b"EHLO\r\n")
    pump.flush()
    assert server.data == b"" and client.lost is not None
    words = tls_failure("localhost", client.lost, made[0], ours.trust)
    assert words.startswith("451 4.7.5 certificate of localhost not trusted: name mismatch: ")
    assert "does not name localhost" in words
    assert "CRL" not in words
