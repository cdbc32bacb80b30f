"""mssmtpd: the ESMTP daemon (MX between operators, submission, outbound relay).

    parser.py    command grammar (pure)         framing.py  lines, DATA, BDAT (pure)
    replies.py   the one reply catalogue        session.py  Session / Envelope, state checks
    protocol.py  Twisted server protocol        server.py   build_factory(services, listener)
    delivery.py  commit to INBOXes / queue      queue.py    backoff, routes, RFC 3464 DSNs
    client.py    outbound ESMTP client (TLS)    relay.py    RelayService over the store queue
    tlsinfo.py   TLS version/cipher/peer cert   devserve.py small launcher (tests, bench)
"""
