"""FolderWatcher.pull shares one query among sessions asking the same thing
at the same time, except a session that has just committed a change of its
own (APPEND, COPY into its folder): that one must never be handed the answer
of a query that may have read the store before its commit."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from imapd.watcher import FolderWatcher


class ManualRunner:
    """Records each store call; the test fires its Deferred."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []
        self.deferreds: list[defer.Deferred[Any]] = []

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        self.calls.append((fn, args))
        d: defer.Deferred[Any] = defer.Deferred()
        self.deferreds.append(d)
        return d

    run_quick = run


def _got(d: defer.Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_same_question_at_the_same_time_costs_one_query() -> None:
    runner = ManualRunner()
    w = FolderWatcher(store=None, runner=runner, reactor=None)  # type: ignore[arg-type]
    a, b = _got(w.pull(7, 10, True, 5)), _got(w.pull(7, 10, True, 5))
    assert len(runner.calls) == 1
    runner.deferreds[0].callback(("changes", frozenset({6})))
    assert a == [("changes", frozenset({6}))]
    assert b == [("changes", frozenset())]  # \Recent goes to the first asker only


def test_a_pull_after_an_own_write_never_joins_an_older_query() -> None:
    runner = ManualRunner()
    w = FolderWatcher(store=None, runner=runner, reactor=None)  # type: ignore[arg-type]
    older = _got(w.pull(7, 10, True, 5))  # started before the APPEND committed
    fresh = _got(w.pull(7, 10, True, 5, fresh=True))
    assert len(runner.calls) == 2  # its own query, started after the commit
    runner.deferreds[0].callback(("before the append", frozenset()))
    assert older == [("before the append", frozenset())] and fresh == []
    runner.deferreds[1].callback(("with the append", frozenset({6})))
    assert fresh == [("with the append", frozenset({6}))]


def test_a_fresh_pull_ignores_answers_cached_for_the_current_round() -> None:
    runner = ManualRunner()
    w = FolderWatcher(store=None, runner=runner, reactor=None)  # type: ignore[arg-type]
    w._round = {(7, 10, True, 5, None): ("cached", frozenset())}
    assert _got(w.pull(7, 10, True, 5)) == [("cached", frozenset())]
    assert len(runner.calls) == 0
    fresh = _got(w.pull(7, 10, True, 5, fresh=True))
    assert len(runner.calls) == 1 and fresh == []
    runner.deferreds[0].callback(("new", frozenset()))
    assert fresh == [("new", frozenset())]


def test_sessions_of_other_accounts_on_a_private_seen_folder_do_not_share_a_pull() -> None:
    runner = ManualRunner()
    w = FolderWatcher(store=None, runner=runner, reactor=None)  # type: ignore[arg-type]
    a = _got(w.pull(7, 10, False, 5, seen_account=1))
    a2 = _got(w.pull(7, 10, False, 5, seen_account=1))
    b = _got(w.pull(7, 10, False, 5, seen_account=2))
    assert len(runner.calls) == 2  # one per account: their \Seen differ
    runner.deferreds[0].callback(("as 1 sees it", frozenset()))
    runner.deferreds[1].callback(("as 2 sees it", frozenset()))
    assert a == a2 == [("as 1 sees it", frozenset())] and b == [("as 2 sees it", frozenset())]
