"""A small, deterministic version of imaptest's default stress run: several
sessions on one mailbox issue random STORE / EXPUNGE / APPEND / COPY / MOVE /
FETCH / SEARCH / NOOP; each session's untagged responses are replayed on a
client-side model, which checks the invariants imaptest checks (RFC 3501 7.3.1,
7.4.1, 2.3.2, 7.2.6): EXPUNGE and FETCH numbers within the known range, EXISTS
never shrinking, UIDs never changing under a sequence number, keywords used
only after FLAGS announced them, \\Recent held by one session at most, and all
sessions agreeing on UIDs and flags after a checkpoint (NOOP everywhere)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import compliance_support
import pytest
from compliance_support import SECRETARY, ImapClient, ImapEnv, deliver, message

env = compliance_support.env  # fixture

SYSTEM = {"\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft", "\\recent"}
LINE = re.compile(rb"\* (\d+) (EXISTS|EXPUNGE|RECENT|FETCH \((.*)\))$")


@dataclass
class Model:
    """What an imaptest-like client believes about its selected mailbox."""
    name: str
    uids: list[int | None] = field(default_factory=list)
    flags: dict[int, set[str]] = field(default_factory=dict)  # uid -> flags
    keywords: set[str] = field(default_factory=set)  # from the last FLAGS response
    errors: list[str] = field(default_factory=list)

    def feed(self, out: bytes, cmd: str) -> None:
        for raw in out.split(b"\r\n"):
            if raw.startswith(b"* FLAGS ("):
                self.keywords = {f.decode().lower() for f in raw[9:-1].split()}
                continue
            m = LINE.match(raw)
            if not m:
                continue
            n, kind = int(m.group(1)), m.group(2)
            if kind == b"EXISTS":
                if n < len(self.uids):
                    self.errors.append(f"{self.name} {cmd}: EXISTS {n} < {len(self.uids)}")
                self.uids.extend([None] * (n - len(self.uids)))
            elif kind == b"EXPUNGE":
                if not 1 <= n <= len(self.uids):
                    self.errors.append(f"{self.name} {cmd}: EXPUNGE {n} of {len(self.uids)}")
                    continue
                uid = self.uids.pop(n - 1)
                if uid is not None:
                    self.flags.pop(uid, None)
            elif kind.startswith(b"FETCH"):
                self._fetch(n, m.group(3).decode(), cmd)

    def _fetch(self, n: int, body: str, cmd: str) -> None:
        if not 1 <= n <= len(self.uids):
            self.errors.append(f"{self.name} {cmd}: FETCH {n} of {len(self.uids)}")
            return
        um = re.search(r"UID (\d+)", body)
        uid = self.uids[n - 1]
        if um:
            got = int(um.group(1))
            if uid is not None and uid != got:
                self.errors.append(f"{self.name} {cmd}: seq {n} UID {uid} became {got}")
            self.uids[n - 1] = uid = got
        fm = re.search(r"FLAGS \(([^)]*)\)", body)
        if fm:
            flags = {f.lower() for f in fm.group(1).split()}
            unknown = {f for f in flags if f not in SYSTEM and f not in self.keywords}
            if unknown:
                self.errors.append(f"{self.name} {cmd}: keyword used without FLAGS: {unknown}")
            if uid is not None:
                self.flags[uid] = flags


def run(c: ImapClient, model: Model, line: str | bytes) -> bytes:
    out = c.send(line if isinstance(line, bytes) else line.encode() + b"\r\n")
    model.feed(out, line if isinstance(line, str) else "APPEND")
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sessions_keep_consistent_views(env: ImapEnv, seed: int) -> None:
    rnd = random.Random(seed)
    for i in range(8):
        deliver(env.store, SECRETARY, message(f"seed {i}"))
    sessions = []
    for k in range(3):
        c = env.login()
        m = Model(f"s{k}")
        run(c, m, "x SELECT INBOX")
        run(c, m, "x UID FETCH 1:* (UID FLAGS)")
        sessions.append((c, m))
    keywords = ["$hello", "$world", "Work"]
    for step in range(120):
        c, m = rnd.choice(sessions)
        count = len(m.uids)
        op = rnd.choice(["store", "store", "uidstore", "expunge", "append", "copy", "move",
                         "fetch", "search", "noop", "deliver"])
        seq = rnd.randint(1, count) if count else None
        if op == "store" and seq:
            sign = rnd.choice(["+", "-", ""])
            flag = rnd.choice(["\\Seen", "\\Flagged", "\\Deleted", "\\Answered", rnd.choice(keywords)])
            run(c, m, f"s{step} STORE {seq} {sign}FLAGS ({flag})")
        elif op == "uidstore" and seq:
            uid = m.uids[seq - 1] or 1
            run(c, m, f"s{step} UID STORE {uid} +FLAGS.SILENT ({rnd.choice(keywords)})")
        elif op == "expunge":
            run(c, m, f"s{step} EXPUNGE")
        elif op == "append":
            raw = message(f"append {step}")
            flag = rnd.choice(["", "(\\Seen) ", f"({rnd.choice(keywords)}) "])
            run(c, m, f"s{step} APPEND INBOX {flag}{{{len(raw)}+}}\r\n".encode() + raw + b"\r\n")
        elif op == "copy" and seq:
            run(c, m, f"s{step} COPY {seq} INBOX")
        elif op == "move" and seq:
            run(c, m, f"s{step} MOVE {seq} Archive")
        elif op == "fetch" and count:
            run(c, m, f"s{step} FETCH 1:* (UID FLAGS)")
        elif op == "search":
            run(c, m, f"s{step} UID SEARCH ALL")
        elif op == "deliver":
            deliver(env.store, SECRETARY, message(f"delivered {step}"))
        else:
            run(c, m, f"s{step} NOOP")
    # checkpoint: every session catches up, then reads its whole view
    for c, m in sessions:
        run(c, m, "z NOOP")
        run(c, m, "z FETCH 1:* (UID FLAGS)")
    errors = [e for _, m in sessions for e in m.errors]
    assert not errors, errors[:10]
    views = []
    recent: dict[int, int] = {}
    for _, m in sessions:
        assert None not in m.uids
        views.append([(u, sorted(m.flags[u] - {"\\recent"})) for u in m.uids])  # type: ignore[index]
        for u in m.uids:
            if "\\recent" in m.flags[u]:  # type: ignore[index]
                recent[u] = recent.get(u, 0) + 1  # type: ignore[index]
    assert views[0] == views[1] == views[2]
    assert all(v == 1 for v in recent.values()), recent
