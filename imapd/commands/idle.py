"""IDLE (RFC 2177): the protocol reports changes until the client sends DONE."""

from __future__ import annotations

from imapd.commands.base import Context, Handler, ok
from imapd.errors import Reply
from imapd.parser.commands import Command, Idle


async def idle(ctx: Context, cmd: Idle) -> Reply:
    await ctx.idle()
    return ok("IDLE terminated")


HANDLERS: dict[type[Command], Handler] = {Idle: idle}
