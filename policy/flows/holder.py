"""The running matrix, replaced whole on reload.

Readers take `holder.matrix` (one attribute read: atomic) and decide on that
matrix; `reload` builds a new one aside and swaps it in only when the file is
valid, so a bad edit never leaves the server without a matrix, nor with half
of one. Wiring it to SIGHUP and `mssctl policy reload` comes later.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conf.settings import ListenerRole
from policy.flows.engine import FlowMatrix
from policy.flows.loader import (
    FlowMatrixError,
    FlowProblem,
    checksum_of,
    parse_matrix,
    read_matrix_file,
)
from policy.flows.model import FlowDecision, FlowRequest, FlowVerdict


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did. `rules`, `default` and `checksum` describe the
    matrix running afterwards (the previous one when the file was refused);
    `file_checksum` is the file that was read (None when unreadable)."""

    ok: bool
    path: Path
    rules: int
    default: FlowVerdict
    checksum: str
    previous_checksum: str
    file_checksum: str | None
    problems: tuple[FlowProblem, ...] = ()

    @property
    def changed(self) -> bool:
        return self.checksum != self.previous_checksum

    def summary(self) -> str:
        if self.ok:
            verb = "reloaded" if self.changed else "unchanged"
            return (f"{self.path}: {verb}: {self.rules} rules, default {self.default.value}, "
                    f"checksum {self.checksum}")
        return (f"{self.path}: refused ({len(self.problems)} problem"
                f"{'' if len(self.problems) == 1 else 's'}); still running "
                f"{self.rules} rules, checksum {self.checksum}")


class FlowMatrixHolder:
    """Holds the running `FlowMatrix` for the daemons."""

    def __init__(self, matrix: FlowMatrix, path: Path,
                 listeners: Mapping[str, ListenerRole] | None = None) -> None:
        self._matrix = matrix
        self.path = path
        self.listeners = listeners
        self._lock = threading.Lock()  # one reload at a time; readers never wait

    @classmethod
    def load(cls, path: str | Path,
             listeners: Mapping[str, ListenerRole] | None = None) -> FlowMatrixHolder:
        """The first load: raises FlowMatrixError (a server must not start
        without a valid matrix)."""
        path = Path(path)
        data = read_matrix_file(path)
        return cls(parse_matrix(data, str(path), listeners=listeners), path, listeners)

    @property
    def matrix(self) -> FlowMatrix:
        return self._matrix

    def decide(self, request: FlowRequest) -> FlowDecision:
        return self._matrix.decide(request)

    def explain(self, request: FlowRequest) -> FlowDecision:
        return self._matrix.explain(request)

    def reload(self, path: str | Path | None = None) -> ReloadResult:
        """Reads `path` (default: the file loaded last) and swaps the new
        matrix in if it is valid; otherwise keeps the running one and
        returns the problems. Never raises for a bad file."""
        target = Path(path) if path is not None else self.path
        with self._lock:
            previous = self._matrix
            file_checksum: str | None = None
            try:
                data = read_matrix_file(target)
                file_checksum = checksum_of(data)
                fresh = parse_matrix(data, str(target), listeners=self.listeners)
            except FlowMatrixError as exc:
                return ReloadResult(False, target, len(previous), previous.default,
                                    previous.checksum, previous.checksum, file_checksum,
                                    tuple(exc.problems))
            self._matrix = fresh
            self.path = target
            return ReloadResult(True, target, len(fresh), fresh.default, fresh.checksum,
                                previous.checksum, file_checksum)
