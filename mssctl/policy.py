"""`mssctl policy check|explain`: the flow matrix, validated and explained.

`check` lints a matrix file (every problem as ``file:line: rule ID: message``,
exit 2; a one-line summary and exit 0 when it is fine). `explain` says which
rule decides one flow and, with -v, why each earlier rule did not match; it
reads the store (never writes) and the whitelist for the facts, through
`policy.flows.facts_for`, as the server will.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from conf.settings import ListenerRole, Settings
from mssctl.common import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    ConfigProblems,
    add_config_option,
    config_path,
    load,
    opened_store,
    store_errors,
)
from policy.flows import (
    AuthMethod,
    FlowDecision,
    FlowMatrix,
    FlowMatrixError,
    FlowRequest,
    listener_roles,
    load_matrix,
)
from policy.flows.conditions import FLOW_ROLES, parse_ip, parse_size
from storage.interface import AccountClass

# explain --as without --method: the usual method of each class.
USUAL_METHOD = {
    AccountClass.PRACTITIONER: AuthMethod.CARD,
    AccountClass.SYSTEM: AuthMethod.ORG_CERTIFICATE,
    AccountClass.STAFF: AuthMethod.PASSWORD,
    AccountClass.ADMIN: AuthMethod.PASSWORD,
}


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="the flow matrix: check a file, explain a decision")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = verbs.add_parser(
        "check", help="validate a flow matrix",
        description="Validate a flow matrix: every problem as FILE:LINE: rule ID: message "
        "(exit 2), else one summary line (exit 0). Listener names are checked against the "
        "settings when there are settings.")
    check.add_argument("file", nargs="?", type=Path, metavar="FILE",
                       help="the matrix (default: policy.flows_file of the settings)")
    add_config_option(check)
    check.set_defaults(func=cmd_check)

    reload = verbs.add_parser(
        "reload", help="make the running server re-read the matrix",
        description="Validate policy.flows_file, then ask the running `mssctl serve` of "
        "these settings to re-read it (SIGHUP, which also re-reads certificates, CRLs and "
        "the whitelist). A file with problems is not sent: they are printed (exit 2) and "
        "the running matrix stays. The server records a `reload` audit event.")
    add_config_option(reload)
    reload.set_defaults(func=cmd_reload)

    ex = verbs.add_parser(
        "explain", help="which rule decides a flow, and why",
        description="Decide one flow (sender, recipient) with the matrix and print the "
        "decision, the rule that made it and the facts it was decided on; -v also prints "
        "every rule tried and why it did not match. Reads the store and the whitelist.")
    ex.add_argument("--from", dest="sender", required=True, metavar="ADDR",
                    help="envelope sender ('' or '<>' for the null sender)")
    ex.add_argument("--to", dest="recipient", required=True, metavar="ADDR",
                    help="one envelope recipient")
    ex.add_argument("--listener", metavar="NAME",
                    help="listener name (default: the first submission listener with --as, "
                    "else the first mx listener)")
    ex.add_argument("--as", dest="account", metavar="ACCOUNT",
                    help="the logged-in account (default: not logged in)")
    ex.add_argument("--method", choices=[m.value for m in AuthMethod],
                    help="how ACCOUNT logged in (default: the usual method of its class: "
                    "card for practitioners, org-certificate for systems, else password)")
    ex.add_argument("--peer-dn", metavar="DN", help="certificate DN of the sending MTA (mx)")
    ex.add_argument("--ip", metavar="IP", help="client address (default: unknown)")
    ex.add_argument("--size", type=_size, metavar="N",
                    help="message size in bytes, or 10M, 512K (default: unknown)")
    ex.add_argument("--flows", type=Path, metavar="FILE",
                    help="explain with this matrix instead of policy.flows_file")
    ex.add_argument("-v", "--verbose", action="store_true",
                    help="every rule tried, and why it did not match")
    add_config_option(ex)
    ex.set_defaults(func=cmd_explain)


def _size(text: str) -> int:
    size = parse_size(text)
    if size is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 10485760, 10M or 512K, "
                                         f"got {text!r}")
    return size


def _matrix_path(settings: Settings, given: Path | None, config: str) -> Path:
    if given is not None:
        return given
    if settings.policy.flows_file is None:
        raise CliError(f"policy.flows_file is not set in {config}; name the matrix file",
                       EXIT_USAGE)
    return settings.policy.flows_file


def _load_matrix(path: Path, settings: Settings | None) -> FlowMatrix:
    try:
        return load_matrix(path, listeners=listener_roles(settings) if settings else None)
    except FlowMatrixError as exc:
        raise ConfigProblems([str(p) for p in exc.problems]) from None


def _config_given(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
                or Path(DEFAULT_CONFIG).is_file())


# ---------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    settings: Settings | None = None
    note = ""
    if args.file is None or _config_given(args):
        settings = load(args)
    else:
        note = " (listener names not checked: no settings file)"
    path = _matrix_path(settings, args.file, str(config_path(args))) if settings else (
        args.file)
    matrix = _load_matrix(path, settings)
    print(f"{path}: {matrix.summary()}{note}")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    import signal

    from mssctl.common import EXIT_FAILURE, admin_change
    from mssctl.serve import pid_file

    settings = load(args)
    path = _matrix_path(settings, None, str(config_path(args)))
    matrix = _load_matrix(path, settings)  # problems: printed, exit 2, nothing sent
    pid_path = pid_file(config_path(args))
    try:
        pid = int(pid_path.read_text(encoding="ascii").strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        raise CliError(f"no running server for {config_path(args)} (no live pid in "
                       f"{pid_path}); the matrix is valid: {matrix.summary()}",
                       EXIT_FAILURE) from None
    with admin_change(settings, "policy-reload", str(path), pid=pid, rules=len(matrix.rules),
                      checksum=matrix.checksum):
        os.kill(pid, signal.SIGHUP)
    print(f"{path}: {matrix.summary()}; reload sent to pid {pid} (its `reload` audit event "
          "says what it re-read)")
    return EXIT_OK


# ---------------------------------------------------------------- explain


def _listener(settings: Settings, name: str | None, logged_in: bool) -> str:
    roles = listener_roles(settings)
    if name is None:
        wanted = ListenerRole.SUBMISSION if logged_in else ListenerRole.MX
        name = next((n for n, r in roles.items() if r is wanted), None)
        if name is None:
            raise CliError(f"the settings define no {wanted.value} listener; name one with "
                           "--listener", EXIT_USAGE)
        return name
    if name not in roles:
        raise CliError(f"--listener: unknown listener {name!r}; the settings define "
                       f"{', '.join(roles)}", EXIT_USAGE)
    if roles[name].value not in FLOW_ROLES:
        raise CliError(f"--listener: {name!r} is an {roles[name].value} listener; flows are "
                       "decided on mx and submission listeners", EXIT_USAGE)
    return name


def cmd_explain(args: argparse.Namespace) -> int:
    from policy.flows import facts_for
    from policy.whitelist import Whitelist, WhitelistError

    if args.method and not args.account:
        raise CliError("--method goes with --as ACCOUNT", EXIT_USAGE)
    if args.ip is not None and parse_ip(args.ip) is None:
        raise CliError(f"--ip: expected an IPv4 or IPv6 address, got {args.ip!r}", EXIT_USAGE)
    settings = load(args)
    path = _matrix_path(settings, args.flows, str(config_path(args)))
    matrix = _load_matrix(path, settings)
    listener = _listener(settings, args.listener, args.account is not None)
    whitelist = None
    if settings.policy.whitelist_file is not None:
        try:
            whitelist = Whitelist.load(settings.policy.whitelist_file)
        except WhitelistError as exc:
            raise CliError(f"policy.whitelist_file: {exc}") from None
    sender = "" if args.sender.strip() in ("", "<>") else args.sender.strip()
    assumed = False
    with opened_store(settings) as store:
        account = None
        method = AuthMethod(args.method) if args.method else None
        if args.account:
            with store_errors(f"--as {args.account}"):
                account = store.get_account(args.account.strip().lower())
            if method is None:
                method, assumed = USUAL_METHOD[account.account_class], True
        with store_errors():
            request = facts_for(store, settings, whitelist, listener=listener, sender=sender,
                                recipient=args.recipient, client_ip=args.ip, account=account,
                                auth_method=method, peer_dn=args.peer_dn, size=args.size)
    decision = matrix.explain(request)
    print("\n".join(explain_lines(matrix, request, decision, verbose=args.verbose,
                                  method_assumed=assumed)))
    return EXIT_OK


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def explain_lines(matrix: FlowMatrix, r: FlowRequest, d: FlowDecision, *, verbose: bool,
                  method_assumed: bool = False) -> list[str]:
    """What `policy explain` prints."""
    if d.allowed:
        verdict = d.verdict.value
    else:
        from mssmtpd.replies import flow_reply

        reply = flow_reply(d)
        verdict = f"{d.verdict.value}: {reply.code} {reply.status} {reply.text}"
    where = f"{matrix.source}:{d.line}"
    rule = (f"default (no rule matched; {where})" if d.rule == "default"
            else f"{d.rule} ({where})")
    lines = [f"decision   {verdict}", f"rule       {rule}",
             f"matrix     {matrix.source}: {matrix.summary()}"]
    if d.size_assumed:
        lines.append("note       the size is not known: this rule holds up to its max_size "
                     "(give --size)")
    account = "not logged in"
    if r.account is not None:
        method = r.auth_method.value if r.auth_method else "-"
        how = f"{method}, assumed from the class: use --method" if method_assumed else method
        cls = r.account_class.value if r.account_class else "-"
        account = f"{r.account} ({cls}, {how})"
    sender_where = "null sender" if not r.sender else "local" if r.sender_local else "remote"
    box = f", box {r.sender_box_type.value}" if r.sender_box_type else ""
    rcpt_where = "local" if r.recipient_local else "remote"
    rbox = ""
    if r.recipient_box_state is not None:
        rbox = f", box {r.recipient_box_type.value + ' ' if r.recipient_box_type else ''}" \
               f"{r.recipient_box_state.value}"
    lines += [
        "facts:",
        f"  listener   {r.listener} (role {r.role.value}), client {r.client_ip or 'unknown'}",
        f"  account    {account}",
        f"  sender     {r.sender or '<>'} ({sender_where}{box})",
    ]
    if r.role is ListenerRole.MX or r.peer_dn is not None:
        lines.append(f"  peer       {r.peer_dn or 'no certificate'} (whitelisted for the "
                     f"sender's domain: {_yes(r.peer_whitelisted)})")
    lines += [
        f"  recipient  {r.recipient} ({rcpt_where}, whitelisted: "
        f"{_yes(r.recipient_whitelisted)}{rbox})",
        f"  size       {'unknown' if r.size is None else f'{r.size} bytes'}",
    ]
    if verbose:
        lines.append("rules tried, in order:")
        for miss in d.tried:
            lines.append(f"  {miss.rule} (line {miss.line}): {'; '.join(miss.reasons)}")
        if d.rule == "default":
            lines.append(f"  default (line {d.line}): no rule matched")
        else:
            lines.append(f"  {d.rule} (line {d.line}): matched")
    return lines
