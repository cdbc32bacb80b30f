"""`mssctl peer add OTHER_DIR`: make this instance trust another local one.

For two instances made by `mssctl init` (two operators on one machine): adds
the other's CA and CRL to our `tls.ca_files` / `tls.crl_files` (its files,
by absolute path, so a renewed CRL is seen on reload), a whitelist entry for
its domain with its server certificate's DN (what `policy.relay_dn_check`
and the inbound peer check compare), and a static route `queue.routes` to
its mx listener. Run it on each side for both directions. `mss.yaml` is
edited in place where `init` wrote those keys (comments kept); the result is
validated before it replaces the file. One audit event.
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from mssctl.common import EXIT_OK, CliError, add_config_option, admin_change, config_path, load


def register(sub: Any) -> None:
    p = sub.add_parser("peer", help="trust another local instance (two operators)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser(
        "add", help="trust OTHER_DIR's CA and CRL, whitelist its domain and DN, route to it")
    add.add_argument("other", metavar="OTHER_INSTANCE_DIR", type=Path)
    add_config_option(add)
    add.set_defaults(func=cmd_add)


def _add_list_item(text: str, key: str, value: str) -> str:
    """Appends `value` to the block list `  key:` (as `init` writes it)."""
    m = re.search(rf"^  {key}:\n((?:    - .*\n)*)", text, re.M)
    if m is None:
        raise CliError(f"cannot find the list tls.{key} in the settings file: add {value} "
                       "to it by hand")
    items = [line[6:].strip().strip("\"'") for line in m.group(1).splitlines()]
    if value in items:
        return text
    return text[:m.end()] + f"    - {value}\n" + text[m.end():]


def _set_route(text: str, domain: str, route: str) -> str:
    line = f'    {domain}: "{route}"\n'
    empty = re.search(r"^  routes: \{\}\n", text, re.M)
    if empty is not None:
        return text[:empty.start()] + "  routes:\n" + line + text[empty.end():]
    m = re.search(r"^  routes:\n((?:    .*\n)*)", text, re.M)
    if m is None:
        raise CliError(f"cannot find queue.routes in the settings file: add {domain}: "
                       f'"{route}" to it by hand')
    kept = [ln for ln in m.group(1).splitlines(keepends=True)
            if not re.match(rf"^    ['\"]?{re.escape(domain)}['\"]?:", ln)]
    return text[:m.start(1)] + "".join(kept) + line + text[m.end():]


def _add_whitelist_entry(path: Path, domain: str, dn: str) -> bool:
    from policy.whitelist import Whitelist, WhitelistError

    try:
        current = Whitelist.load(path)
    except WhitelistError as exc:
        raise CliError(f"{path}: {exc}; fix the whitelist first") from None
    if current.allows(domain, dn):
        return False
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    entry = f"""    <Domaine>
      <Nom>{escape(domain)}</Nom>
      <Description>peer instance (mssctl peer add)</Description>
      <DNCertificatOperateur>{escape(dn)}</DNCertificatOperateur>
      <ResponsableContact>postmaster@{escape(domain)}</ResponsableContact>
      <SupportContact>support@{escape(domain)}</SupportContact>
      <DateMAJ>{stamp}</DateMAJ>
    </Domaine>
"""
    text = path.read_text(encoding="utf-8")
    end = text.rfind("  </ListeDomaines>")
    if end < 0:
        raise CliError(f"{path}: no </ListeDomaines> to add {domain} before")
    new = text[:end] + entry + text[end:]
    Whitelist.parse(new.encode("utf-8"))  # still a valid list
    _replace(path, new)
    return True


def _replace(path: Path, text: str) -> None:
    """Atomically, keeping the file's mode (mss.yaml may be 0600: it can hold
    a database password)."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)


def cmd_add(args: argparse.Namespace) -> int:
    from certs.identity import rfc4514_subject
    from certs.trust import load_pem_certificates
    from conf.loader import ConfigError, load_settings, parse_yaml, settings_from_data

    settings = load(args)
    ours = Path(config_path(args)).resolve()
    other_file = args.other / "mss.yaml"
    try:
        other = load_settings(other_file)
    except (ConfigError, OSError) as exc:
        lines = getattr(exc, "lines", None) or [str(exc)]
        raise CliError(f"{other_file}: not a usable instance: {lines[0]}") from None
    domain = other.domains[0]
    if domain in settings.domains:
        raise CliError(f"{args.other} serves {domain}, as this instance does")
    mx = next((li for li in other.listeners if li.role.value == "mx"), None)
    if mx is None:
        raise CliError(f"{other_file} has no mx listener to route to")
    host = "127.0.0.1" if mx.address in ("", "0.0.0.0", "::") else mx.address  # noqa: S104
    route = f"[{host}]:{mx.port}" if ":" in host else f"{host}:{mx.port}"
    if not other.tls.ca_files:
        raise CliError(f"{other_file} names no tls.ca_files: nothing to trust it by")
    try:
        dn = rfc4514_subject(load_pem_certificates(other.tls.cert_file)[0])
    except (OSError, ValueError, IndexError) as exc:
        raise CliError(f"{other.tls.cert_file}: cannot read the peer's server certificate "
                       f"({exc})") from None
    ca = str(other.tls.ca_files[0].resolve())
    crl = str(other.tls.crl_files[0].resolve()) if other.tls.crl_files else None
    whitelist = settings.policy.whitelist_file
    with admin_change(settings, "peer-add", f"peer:{domain}", route=route, dn=dn, ca=ca):
        text = ours.read_text(encoding="utf-8")
        text = _add_list_item(text, "ca_files", ca)
        if crl is not None:
            text = _add_list_item(text, "crl_files", crl)
        text = _set_route(text, domain, route)
        try:
            settings_from_data(parse_yaml(text, str(ours)), str(ours), ours.parent)
        except ConfigError as exc:
            raise CliError(f"the edited settings would not load: {exc.lines[0]}") from None
        if whitelist is not None:
            _add_whitelist_entry(whitelist, domain, dn)
        _replace(ours, text)
    print(f"peer {domain}: CA {ca} trusted, whitelisted with DN {dn}, routed to {route}")
    if whitelist is None:
        print("note: no policy.whitelist_file, so no whitelist entry was written")
    print("Reload (SIGHUP) or restart this instance for it to take effect.")
    return EXIT_OK
