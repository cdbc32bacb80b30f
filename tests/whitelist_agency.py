"""A small but real publisher of the national whitelist for the tests: HTTPS
on 127.0.0.1 (port 0, a trustme certificate), serving `body` at any path, in
a thread of the test process."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

OP_A = "CN=mx.operateur-a.fr,OU=1750000001,O=Operateur A,ST=Paris (75),C=FR"


def document(*domains: tuple[str, str]) -> bytes:
    entries = "".join(
        f"<Domaine><Nom>{name}</Nom><Description>d</Description>"
        f"<DNCertificatOperateur>{dn}</DNCertificatOperateur>"
        "<ResponsableContact>r@x.fr</ResponsableContact>"
        "<SupportContact>s@x.fr</SupportContact><DateMAJ>2026-01-01</DateMAJ></Domaine>"
        for name, dn in domains)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
            "<DateDeGeneration>2026-12-07T03:00:00</DateDeGeneration>"
            f"<ListeDomaines>{entries}</ListeDomaines></ListeBlancheMSSante>").encode()


GOOD = document(("ch-demo.mssante.fr", OP_A), ("clinique.test", OP_A))


class Agency:
    """Serves `body` at any path over HTTPS."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = tmp / "agency-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.body = GOOD
        self.requests = 0  # GETs answered
        agency = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                agency.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(agency.body)))
                self.end_headers()
                self.wfile.write(agency.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/liste-blanche.xml"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


