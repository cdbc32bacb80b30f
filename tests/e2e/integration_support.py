"""The product as a user runs it, for the integration tests.

`MssInstance.create(directory)` runs ``mssctl init DIR --demo --port-offset N``
(through the CLI entry point, in-process; N chosen so that every default port
binds right now) and reads the demo logins, passwords, certificate files and
CA file from what `init` *prints* (a user has nothing else).
`MssInstance.demo(tmp_path_factory, name)` gives each test module a copy of
one such instance per session, moved to fresh ports. `start()` runs ``mssctl
serve --config DIR/mss.yaml`` as a subprocess until every listener accepts
and both daemons greet; `stop()` sends SIGTERM and returns the exit status;
`kill()` is SIGKILL. When serve finds a port taken (another test grabbed it
after the bind test), the listeners move to a fresh offset and serve starts
again. `errors_since(mark)` returns the server log if it recorded a bug.

`ImapConn` is a byte-exact IMAP client (literals understood, nothing
normalised) for the exchanges imaplib cannot express (AUTHENTICATE without
initial response, IDLE, LIST-EXTENDED); `submit()` sends mail with smtplib.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mssctl_support import free_port_offset, mssctl_cmd

from mssctl.init import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "hopital.test"
MARTIN = f"dr.martin@{DOMAIN}"
DURAND = f"sec.durand@{DOMAIN}"
PETIT = f"sec.petit@{DOMAIN}"
CARDIO = f"cardiologie@{DOMAIN}"
LABO = f"labo@{DOMAIN}"
START_DEADLINE = 30.0  # seconds for every listener to greet (a loaded CI box is slow)
STOP_DEADLINE = 10.0
IO_TIMEOUT = 10.0
INIT_RECORD = "init-output.txt"  # what `mssctl init` printed (+ its port offset)


# ---------------------------------------------------------------- ports


def first_line(port: int, timeout: float, *, proxy: bool = False) -> bytes:
    """The first line a cleartext listener sends (b"" if none in time).
    `proxy`: a PROXY protocol listener, sent a balancer's health-check header
    first."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if proxy:
                s.sendall(b"PROXY UNKNOWN\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return b""


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- the instance


@dataclass
class Login:
    login: str
    password: str | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass
class MssInstance:
    directory: Path
    offset: int
    init_output: str
    ca_file: Path
    logins: dict[str, Login]
    proc: subprocess.Popen[bytes] | None = None
    serve_args: tuple[str, ...] = ()  # extra `mssctl serve` arguments, e.g. --workers 2
    starts: int = 0
    proxied: frozenset[str] = frozenset()  # listeners with proxy_protocol: true
    _rng: random.Random = field(default_factory=random.Random)

    # -- creation

    @classmethod
    def create(cls, directory: Path, *, attempts: int = 5,
               domain: str | None = None) -> MssInstance:
        rng = random.Random()  # noqa: S311 - port choice, not security
        last = ""
        extra = ("--domain", domain) if domain else ()
        for _ in range(attempts):
            offset = free_port_offset(rng)
            code, out = run_cli("init", str(directory), "--demo", "--port-offset", str(offset),
                                *extra)
            if code == 0:
                return cls.from_init_output(directory, offset, out, rng)
            last = out
        raise RuntimeError(f"mssctl init failed: {last}")

    @classmethod
    def demo(cls, factory: pytest.TempPathFactory, name: str) -> MssInstance:
        """A fresh demo instance in its own tmp dir, on its own free ports.

        `mssctl init --demo` runs once per test session (per xdist worker);
        each caller gets a copy of that instance (the settings use relative
        paths so that an instance directory can be moved) with its listeners
        moved to a new free offset: copying takes milliseconds, init seconds."""
        template = factory.getbasetemp() / "mss-demo-template"
        record = template / INIT_RECORD
        if not record.exists():  # tests of one worker run one at a time
            shutil.rmtree(template, ignore_errors=True)
            first = cls.create(template)
            record.write_text(f"{first.offset}\n{first.init_output}", encoding="utf-8")
        directory = factory.mktemp(name) / "inst"
        shutil.copytree(template, directory)
        offset, _, out = (directory / INIT_RECORD).read_text(encoding="utf-8").partition("\n")
        inst = cls.from_init_output(directory, int(offset), out.replace(str(template),
                                                                         str(directory)),
                                    random.Random())  # noqa: S311 - port choice
        inst.move_ports()
        return inst

    @classmethod
    def from_init_output(
        cls, directory: Path, offset: int, out: str, rng: random.Random
    ) -> MssInstance:
        ca = re.search(r"^CA file to trust: (\S+)$", out, re.M)
        assert ca, f"init does not name the CA file:\n{out}"
        logins: dict[str, Login] = {}
        current: Login | None = None
        for line in out.splitlines():
            head = re.match(r"^  (\S+@\S+)\s", line)
            if head:
                current = logins.setdefault(head.group(1), Login(head.group(1)))
                continue
            if current is None:
                continue
            if m := re.match(r"^\s+password: (\S+)$", line):
                current.password = m.group(1)
            elif m := re.match(r"^\s+certificate \(PEM\): (\S+)$", line):
                current.cert = Path(m.group(1))
            elif m := re.match(r"^\s+private key \(PEM\): (\S+)$", line):
                current.key = Path(m.group(1))
        return cls(directory, offset, out, Path(ca.group(1)), logins, _rng=rng)

    # -- ports

    def port(self, name: str) -> int:
        for lname, port, _, _ in DEFAULT_PORTS:
            if lname == name:
                return port + self.offset
        raise KeyError(name)

    @property
    def ports(self) -> list[int]:
        return [port + self.offset for _, port, _, _ in DEFAULT_PORTS]

    def move_ports(self) -> None:
        """Rewrites mss.yaml's listener ports for a new free offset."""
        new = free_port_offset(self._rng)
        config = self.directory / "mss.yaml"
        text = config.read_text()
        for _, port, _, _ in DEFAULT_PORTS:
            text = text.replace(f"port: {port + self.offset},", f"port: {port + new},")
        config.write_text(text)
        self.offset = new

    # -- running

    @property
    def log_file(self) -> Path:
        return self.directory / "serve.log"

    def start(self, *, attempts: int = 4) -> None:
        for _ in range(attempts):
            if self._start_once():
                self.starts += 1
                return
            self.move_ports()
        raise RuntimeError(f"serve did not start:\n{self.log_tail()}")

    def _start_once(self) -> bool:
        assert self.proc is None or self.proc.poll() is not None
        mark = self.log_mark()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                mssctl_cmd("serve", "--config", str(self.directory / "mss.yaml"), *self.serve_args),
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        deadline = time.monotonic() + START_DEADLINE
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                if b"already in use" in self.log_file.read_bytes()[mark:]:
                    return False  # lost a race for a port: move and retry
                raise RuntimeError(f"serve exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"listeners not accepting in {START_DEADLINE}s:\n"
                                   f"{self.log_tail()}")
            pending = [p for p in pending if not accepts(p)]
            if pending:
                time.sleep(0.05)  # polling with a deadline
        # TCP accepts as soon as serve has bound the sockets; the protocols
        # answer once its worker runs: wait for a greeting from each daemon.
        for name, expected in (("smtp-mx", b"220 "), ("imap", b"* OK ")):
            greeting = first_line(self.port(name), max(0.1, deadline - time.monotonic()),
                                  proxy=name in self.proxied)
            if not greeting.startswith(expected):
                self.kill()
                raise RuntimeError(f"{name} greeted {greeting!r} (serve status "
                                   f"{self.proc.returncode}):\n{self.log_tail()}")
        return True

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Sends `sig` and returns serve's exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve did not stop within {STOP_DEADLINE}s") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Where the server log ends now (octets), for `errors_since`."""
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def log_since(self, mark: int) -> str:
        return self.log_file.read_bytes()[mark:].decode(errors="replace")

    def errors_since(self, mark: int) -> str:
        """Server log records since `mark` that mean a bug: a traceback, or
        an error the daemons answered with a correlation id (SERVERBUG)."""
        text = self.log_since(mark)
        if "Traceback" in text or "[cid=" in text or " ERROR " in text:
            return text[-6000:]
        return ""

    # -- files

    def audit_text(self) -> str:
        return (self.directory / "audit.log").read_text(encoding="utf-8")

    def password(self, login: str) -> str:
        pw = self.logins[login].password
        assert pw, f"init printed no password for {login}"
        return pw

    def cert_pair(self, login: str) -> tuple[Path, Path]:
        entry = self.logins[login]
        assert entry.cert and entry.key, f"init printed no certificate for {login}"
        return entry.cert, entry.key

    @property
    def peer_operator_pair(self) -> tuple[Path, Path]:
        """Another operator's MTA certificate and key (the demo PKI's
        `peer_operator`, listed on the demo whitelist for operateur-pair.test):
        what a peer presents on the mx listener."""
        pki = self.directory / "pki"
        return pki / "peer-operator.pem", pki / "peer-operator.key"

    def client_context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """What a mail client does: trust the CA file init names, check the
        host name (127.0.0.1 is in the server certificate), optionally
        present a client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx


def run_cli(*args: str) -> tuple[int, str]:
    """`mssctl ARGS` through its entry point, in this process (an interpreter
    start costs seconds on a loaded 2-core machine); returns (status, output)."""
    from mssctl.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


def run_mssctl(instance: MssInstance, *args: str) -> str:
    """An admin command on `instance` (status 0 asserted); returns its output."""
    code, out = run_cli(*args, "--config", str(instance.directory / "mss.yaml"))
    assert code == 0, out
    return out


# ---------------------------------------------------------------- SMTP


def submit(
    instance: MssInstance,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    cert_of: str | None = None,
    password_of: str | None = None,
    accepted_at: list[float] | None = None,
) -> str:
    """Submits over the STARTTLS submission port with EXTERNAL (the
    certificate of `cert_of`) or PLAIN (the password of `password_of`);
    returns the server's reply to the end of DATA, and appends the
    time.monotonic() of that reply to `accepted_at`."""
    cert = instance.cert_pair(cert_of) if cert_of else None
    ctx = instance.client_context(cert)
    with smtplib.SMTP("127.0.0.1", instance.port("submission"), timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        s.starttls(context=ctx)
        s.ehlo("client.test")
        if cert_of:
            code, resp = s.docmd("AUTH", "EXTERNAL =")
            assert code == 235, (code, resp)
        else:
            assert password_of
            s.login(password_of, instance.password(password_of))
        s.mail(sender)
        for rcpt in recipients:
            code, resp = s.rcpt(rcpt)
            assert code == 250, (rcpt, code, resp)
        code, resp = s.data(message)
        if accepted_at is not None:
            accepted_at.append(time.monotonic())
        assert code == 250, (code, resp)
        return resp.decode()


def make_message(subject: str, body: str, *, sender: str, to: Iterable[str],
                 msgid: str | None = None) -> bytes:
    return (
        f"From: {sender}\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
        f"Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
        f"Message-ID: <{msgid or subject.replace(' ', '.')}@labo.{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def strip_trace(raw: bytes) -> bytes:
    """The message without the Received/Return-Path fields a server puts on
    top (their folded continuation lines included)."""
    lines = raw.split(b"\r\n")
    i = 0
    while i < len(lines):
        name = lines[i].split(b":", 1)[0].lower()
        if name not in (b"received", b"return-path"):
            break
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\r\n".join(lines[i:])


# ---------------------------------------------------------------- IMAP


@dataclass
class Response:
    """One server response: the line with literals kept inline (so `text`
    is exactly what came over the wire) and the literals apart."""

    text: bytes
    literals: list[bytes]

    @property
    def untagged(self) -> bool:
        return self.text.startswith(b"* ")


class ImapConn:
    """A byte-exact IMAP client over a real socket."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None = None, *,
                 server_hostname: str = "127.0.0.1") -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock: socket.socket = (
            ctx.wrap_socket(raw, server_hostname=server_hostname) if ctx else raw)
        self.buf = b""
        self.counter = 0
        self.greeting = self.read()

    # -- wire

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; buffered {self.buf[:200]!r}")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read(self) -> Response:
        text = b""
        literals: list[bytes] = []
        while True:
            line = self._line()
            text += line
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return Response(text, literals)
            lit = self._exact(int(m.group(1)))
            literals.append(lit)
            text += b"\r\n" + lit

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def tag(self) -> bytes:
        self.counter += 1
        return b"A%03d" % self.counter

    def command(self, cmd: bytes | str) -> tuple[list[Response], Response]:
        """Sends one command; returns (untagged responses, tagged response)."""
        if isinstance(cmd, str):
            cmd = cmd.encode()
        tag = self.tag()
        self.send(tag + b" " + cmd + b"\r\n")
        return self.until_tagged(tag)

    def until_tagged(self, tag: bytes) -> tuple[list[Response], Response]:
        untagged: list[Response] = []
        while True:
            r = self.read()
            if r.text.startswith(tag + b" "):
                return untagged, r
            untagged.append(r)

    def ok(self, cmd: bytes | str) -> list[Response]:
        untagged, tagged = self.command(cmd)
        assert re.match(rb"^A\d+ OK", tagged.text), (cmd, tagged.text)
        return untagged

    def login(self, user: str, password: str) -> None:
        self.ok(f'LOGIN "{user}" "{password}"')

    def close(self) -> None:
        try:
            self.send(b"Z LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> ImapConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def untagged_of(responses: list[Response], word: bytes) -> list[Response]:
    """The untagged responses whose first word (after `* ` or a number) is `word`."""
    out = []
    for r in responses:
        parts = r.text.split(b" ", 3)
        if len(parts) > 1 and parts[1].upper() == word:
            out.append(r)
        elif len(parts) > 2 and parts[1].isdigit() and parts[2].upper() == word:
            out.append(r)
    return out
