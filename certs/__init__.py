"""X.509 for the trust space: identities from certificates (`certs.identity`),
trust anchors and CRLs (`certs.trust`), OpenSSL contexts for the listeners and
the relay (`certs.tls`), and a development PKI shaped like IGC-Santé
(`certs.devpki`). Submodules are imported explicitly; nothing is re-exported
here so that importing `certs.identity` does not pull in OpenSSL or Twisted."""
