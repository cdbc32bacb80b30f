"""LIST/LSUB mailbox patterns (RFC 3501 6.3.8): `*` matches anything, `%`
anything but the hierarchy separator.

Matching must take time linear in the name whatever the pattern: a regular
expression built from `%%%%…` backtracks exponentially (one LIST held a worker
for minutes). A pattern is compiled once into a bit-parallel automaton (one bit
per pattern position, Python integers as bit sets), so a name of n characters
costs n steps of a few integer operations, independent of how the wildcards
are arranged. Runs of wildcards are folded first (`%%` is `%`, any run with a
`*` is `*`): they mean the same and the automaton stays as small as the
pattern's literal text.
"""

from __future__ import annotations

from dataclasses import dataclass

from imapd.namespace import SEP

# RFC 3501 5.1: INBOX is case-insensitive; a pattern that starts with it
# matches the name in any case.
_INBOX = "INBOX"


def _fold(pattern: str) -> str:
    out: list[str] = []
    for ch in pattern:
        if ch in "*%" and out and out[-1] in "*%":
            if ch == "*":
                out[-1] = "*"
            continue
        out.append(ch)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ListPattern:
    """A compiled pattern; `matches(name)` tells whether a full name matches."""

    text: str  # folded reference + pattern
    literal_count: int  # characters a matching name has at least
    accept: int  # the bit of the final position
    star: int  # positions of `*` (stay on any character)
    percent: int  # positions of `%` (stay on anything but SEP)
    wild: int  # star | percent: also passed over on no character
    by_char: dict[str, int]  # character -> positions where it is the literal
    exact: bool  # no wildcard and no INBOX prefix: plain equality

    @classmethod
    def compile(cls, reference: str, pattern: str) -> ListPattern:
        full = reference + pattern if not pattern.startswith(SEP) or not reference else pattern
        text = _fold(full)
        inbox_prefix = text[:5].upper() == _INBOX and (len(text) == 5 or text[5] in (SEP, "*", "%"))
        star = percent = 0
        by_char: dict[str, int] = {}
        literals = 0
        for pos, ch in enumerate(text):
            bit = 1 << pos
            if ch == "*":
                star |= bit
            elif ch == "%":
                percent |= bit
            else:
                literals += 1
                chars = {ch.upper(), ch.lower()} if inbox_prefix and pos < 5 else {ch}
                for c in chars:
                    by_char[c] = by_char.get(c, 0) | bit
        return cls(text, literals, 1 << len(text), star, percent, star | percent, by_char,
                   exact=not (star | percent) and not inbox_prefix)

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing. Folding left no two wildcards side by
        # side, so one step reaches every position an empty match can.
        return states | ((states & self.wild) << 1)

    def matches(self, name: str) -> bool:
        text = self.text
        if text == "*":
            return True
        if self.exact:
            return name == text
        if len(name) < self.literal_count:
            return False
        states = self._closure(1)
        by_char, star, percent = self.by_char, self.star, self.percent
        for ch in name:
            stay = states & star if ch == SEP else states & (star | percent)
            states = ((states & by_char.get(ch, 0)) << 1) | stay
            if not states:
                return False
            states = self._closure(states)
        return bool(states & self.accept)
