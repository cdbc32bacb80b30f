"""Search keys the selected view answers (flags, \\Recent, sequence and UID
sets, "$", MODSEQ) give, through the server, what the SEARCH engine gives.

The engine's answer is the same key ANDed with ``NOT LARGER 4000000000``:
true of every message (one whose expunge is pending has no size: 0), but
it makes the server read sizes and look at each message as before. On a
shared mailbox with private \\Seen, with \\Recent, keywords, flags set by
another agent and an expunge by her not yet told: SEARCH, UID SEARCH with
ESEARCH return options, SORT and THREAD.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from imap_transcript import CARDIO, SECRETARY, SECRETARY2, ImapClient, deliver, make_env, message
from imap_transcript import populate as populate_agents

BOX = f"Shared/{CARDIO}/INBOX"
ENGINE = "NOT LARGER 4000000000"
KEYS = (
    "ALL", "UNSEEN", "SEEN", "UNDELETED", "DELETED", "FLAGGED", "UNFLAGGED", "ANSWERED",
    "DRAFT", "KEYWORD $Junk", "UNKEYWORD $junk", "NEW", "OLD", "RECENT", "NOT RECENT",
    "UNDELETED UNSEEN", "OR FLAGGED NEW", "NOT (OR SEEN DELETED)", "2:5", "*", "4:*",
    "UID 3:*", "UID 1,5:7", "UID *", "$", "NOT $", "UID $", "OR $ UNSEEN", "MODSEQ 1",
    "UNDELETED 1:3,9:*",
)


def _answer(client: ImapClient, command: str) -> bytes:
    """The command's SEARCH, SORT, THREAD or ESEARCH line, its tag left out
    (updates told along the way are not part of the answer)."""
    out = client.ok(command)
    found = re.search(rb"^\* (SEARCH|SORT|THREAD|ESEARCH)\b[^\r\n]*", out, re.M)
    assert found, (command, out)
    return re.sub(rb'\(TAG "[^"]*"\) ', b"", found.group(0))


@pytest.fixture
def agent(tmp_path: Path, store: Any) -> ImapClient:
    """SECRETARY, with a view as described above."""
    populate_agents(store)
    store.set_private_seen(CARDIO, True)
    flags: list[tuple[str, ...]] = [(), ("\\Flagged",), ("$Junk",), ("\\Answered",), (),
                                    ("\\Draft", "$junk"), (), ("\\Deleted",), (), ()]
    for i, f in enumerate(flags):
        deliver(store, CARDIO, message(f"patient {i}", f"Compte rendu {i}\r\n"), f)
    store.claim_recent(store.get_folder(store.get_mailbox(CARDIO).id, "INBOX").id)
    env = make_env(tmp_path, store)
    a = env.login(SECRETARY)
    b = env.login(SECRETARY2)
    a.ok(f'SELECT "{BOX}"')
    b.ok(f'SELECT "{BOX}"')
    a.ok("FETCH 1:3 (BODY[])")  # her \Seen only
    b.ok("FETCH 4:6 (BODY[])")  # not hers
    b.ok("STORE 9 +FLAGS (\\Deleted)")
    b.ok("STORE 6 +FLAGS ($Junk \\Flagged)")
    for i in range(10, 13):
        deliver(store, CARDIO, message(f"patient {i}", f"Compte rendu {i}\r\n"))
    a.ok("NOOP")  # the new ones are \Recent to her
    b.ok("STORE 8 +FLAGS (\\Deleted)")
    b.ok("EXPUNGE")  # 8 and 9: expunged, not yet told to her
    a.ok("SEARCH RETURN (SAVE) OR FLAGGED 11")
    return a


def test_search(agent: ImapClient) -> None:
    assert _answer(agent, "SEARCH DELETED") == b"* SEARCH 8 9"  # still numbered
    for key in KEYS:
        assert _answer(agent, f"SEARCH {key}") == _answer(agent, f"SEARCH {key} {ENGINE}"), key


def test_uid_search_with_return_options(agent: ImapClient) -> None:
    agent.ok("NOOP")  # UID SEARCH may tell the expunges: told before the first
    for key in KEYS:
        command = "UID SEARCH RETURN (MIN MAX COUNT ALL)"
        assert (_answer(agent, f"{command} {key}")
                == _answer(agent, f"{command} {key} {ENGINE}")), key


def test_sort_and_thread(agent: ImapClient) -> None:
    agent.ok("NOOP")  # so may SORT and THREAD
    for key in KEYS:
        for command in ("SORT (REVERSE ARRIVAL) UTF-8", "UID SORT (SUBJECT) UTF-8",
                        "THREAD REFERENCES UTF-8"):
            assert (_answer(agent, f"{command} {key}")
                    == _answer(agent, f"{command} {key} {ENGINE}")), (command, key)


def test_too_many_keys_is_a_limit_not_minutes_of_cpu(agent: ImapClient) -> None:
    """Each key costs a pass over the folder: 7,000 `MODSEQ n` fit in one
    64 KiB line and took 33 s of CPU on 100,000 messages. Past
    MAX_SEARCH_KEYS a search (SORT, THREAD alike) answers NO [LIMIT]; up to
    it, the answer is the same as with one such key."""
    from imapd.commands.search import MAX_SEARCH_KEYS

    many = " ".join(["MODSEQ 1"] * (MAX_SEARCH_KEYS + 1))
    for cmd in (f"SEARCH {many}", f"UID SORT (DATE) UTF-8 {many}",
                f"THREAD REFERENCES UTF-8 {many}", f"SEARCH NOT ({many})"):
        _, done = agent.tagged(cmd)
        assert done.split(b" ", 1)[1] == b"NO [LIMIT] Too many search keys\r\n", cmd
    most = " ".join(["MODSEQ 1"] * MAX_SEARCH_KEYS)
    assert _answer(agent, f"SEARCH {most}") == _answer(agent, "SEARCH MODSEQ 1")


def test_heavy_searches_answer_the_same_off_the_reactor(
        agent: ImapClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past REACTOR_WORK (keys x messages) the columns or the messages are
    looked at on a store thread, from copies: the same answers."""
    import imapd.commands.search as search

    keys = [*KEYS, "LARGER 10", "NOT SMALLER 5 UNSEEN"]
    before = [_answer(agent, f"SEARCH {key}") for key in keys]
    monkeypatch.setattr(search, "REACTOR_WORK", 0)
    assert [_answer(agent, f"SEARCH {key}") for key in keys] == before
