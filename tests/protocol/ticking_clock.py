"""A reactor clock for flow-control tests: time moves 1 ms each time it is
read, so a connection's turn on the reactor (the protocols' TURN_SECONDS)
ends after a few commands, as it would on a real reactor under a flood."""

from __future__ import annotations

from twisted.internet.task import Clock


class TickingClock(Clock):
    def seconds(self) -> float:
        self.rightNow += 0.001
        return self.rightNow

    def advance(self, amount: float) -> None:
        """One reactor iteration: runs the calls due now, not those they add
        (time moves while they run, so `Clock.advance` would never stop)."""
        self.rightNow += amount
        now = self.rightNow
        due = sorted((c for c in self.calls if c.getTime() <= now), key=lambda c: c.getTime())
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)

    def run_due(self, limit: int = 1_000_000) -> int:
        """Runs reactor iterations while calls are due now (a yielded turn,
        not a timeout); returns how many iterations ran."""
        for n in range(limit):
            if not any(c.getTime() <= self.rightNow for c in self.calls):
                return n
            self.advance(0)
        raise AssertionError("calls are still due after the limit")
