"""RFC 3516 APPEND of a literal8: the parts it declares
``Content-Transfer-Encoding: binary`` are stored in base64, as Dovecot's
binary converter does on APPEND.

Why: BODY[], RFC822 and every client that does not speak BINARY get the
stored octets, and a literal (RFC 3501 CHAR8) may not carry NUL. Stored in
base64, such a part is valid everywhere, and ``BINARY[part]`` decodes it back
to the octets the client appended (``BINARY.SIZE`` is their count). Parts in
other encodings are stored as sent. Pure: no I/O.
"""

from __future__ import annotations

import base64
from typing import Any

from storage.mime import iter_fields, parse_message

LINE = 76  # RFC 2045 6.8: encoded lines of at most 76 characters


def _binary_leaves(part: dict[str, Any], out: list[dict[str, Any]]) -> None:
    binary = str(part.get("encoding") or "").lower() == "binary"
    if "parts" in part:
        for child in part["parts"]:
            _binary_leaves(child, out)
    elif "message" in part and not (binary and str(part["subtype"]).lower() == "global"):
        _binary_leaves(part["message"], out)
    elif binary:
        # message/global may take any encoding (RFC 6532 3.5): a binary one
        # is encoded whole, as a leaf, unlike message/rfc822 (RFC 2046 5.2.1).
        out.append(part)


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + LINE] for i in range(0, len(encoded), LINE))


def encode_binary_parts(raw: bytes) -> bytes:
    """`raw` with each ``binary`` leaf part re-encoded in base64 (its header's
    Content-Transfer-Encoding changed to match); `raw` itself when it has
    none. The multipart structure, the other parts and the other header
    fields are kept octet for octet."""
    meta = parse_message(raw)
    leaves: list[dict[str, Any]] = []
    _binary_leaves(meta["body"], leaves)
    if not leaves:
        return raw
    out = bytearray()
    pos = 0
    for leaf in sorted(leaves, key=lambda p: int(p["header_start"])):
        h_start, h_end = int(leaf["header_start"]), int(leaf["header_end"])
        b_start, b_end = int(leaf["body_start"]), int(leaf["body_end"])
        out += raw[pos:h_start]
        for name, f_start, f_end, _value in iter_fields(raw, h_start, h_end):
            if name.lower() == b"content-transfer-encoding":
                out += raw[h_start:f_start] + b"Content-Transfer-Encoding: base64\r\n"
                out += raw[f_end:b_start]
                break
        else:  # pragma: no cover - "binary" was read from this very field
            out += raw[h_start:b_start]
        body = raw[b_start:b_end]
        out += _base64_lines(body)
        if body.endswith(b"\n"):
            out += b"\r\n"
        pos = b_end
    out += raw[pos:]
    return bytes(out)
