"""What a command handler sees: the session, the services, and a few
connection operations the protocol provides (send, run a store call, read a
continuation line, switch TLS/compression, wait for the client to drain).

A handler is ``async def handler(ctx, command) -> Reply``; it raises
`imapd.errors.ImapError` (or lets a store error through) to fail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from imapd.errors import Reply
from imapd.notify import NotifySpec
from imapd.parser.commands import Command
from imapd.responses import ResponseCode
from imapd.session import Session
from imapd.watcher import FolderWatcher
from policy.decisions import SessionAccess
from policy.services import Services

T = TypeVar("T")


class Context(Protocol):
    session: Session
    services: Services
    watcher: FolderWatcher

    def send(self, data: bytes) -> None:
        """Queue bytes for the client (untagged responses, literals)."""

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking store/policy call, off the reactor thread."""

    async def run_quick(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`run` for a read known to be short, which may then run right
        here on the reactor thread (`storage.threaded.StoreRunner.run_quick`:
        SQLite). Bounded by the caller: one folder, a short folder list, a
        batch of a few messages; the store stops it before a write, a large
        body or many rows, and it runs again on a thread, so its reads must
        be repeatable (the audit events it recorded are dropped then)."""

    async def run_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`run` for a call that writes through the store's fixed-SQL paths,
        reading first (the writer lane with group commit: see
        `storage.threaded`)."""

    async def run_selected(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`run` for a call on the selected mailbox that reads or changes
        messages: in the same store call, the session's access is checked
        first when the store's access epoch moved since it was last checked
        (or a grant reached its end), so no content leaves once access is
        withdrawn. Raises `imapd.errors.AccessWithdrawn`."""

    async def run_selected_quick(
        self, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """`run_selected` for a read known to be short (see `run_quick`)."""

    async def run_write_selected(
        self, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """`run_write` with the check of `run_selected`."""

    def set_access(self, access: SessionAccess) -> None:
        """Records a check of the session's access (at login, at SELECT)."""

    async def read_line(self, prompt: bytes) -> bytes:
        """Send ``+ prompt`` and return the client's next raw line (no CRLF)."""

    async def drained(self) -> None:
        """Wait until the transport can take more (FETCH backpressure)."""

    def start_tls(self) -> None: ...

    def start_compression(self) -> None: ...

    async def idle(self) -> None:
        """Sends ``+ idling``, reports changes until DONE, then returns."""

    def on_folder_changed(self, folder_id: int) -> None: ...

    def set_notify(self, spec: NotifySpec | None) -> None:
        """NOTIFY SET / NONE (RFC 5465): what the session reports from now
        on, between commands too (None: only what RFC 3501 wants)."""


Handler = Callable[[Context, Any], Awaitable[Reply]]


def ok(text: str, code: ResponseCode | None = None) -> Reply:
    return Reply("OK", code, text)


def command_name(cmd: Command) -> str:
    prefix = "UID " if getattr(cmd, "uid", False) else ""
    return prefix + type(cmd).name
