"""Run one test-server SMTP session: apply the FaultPlan, keep a transcript.

``FaultySMTP`` is aiosmtpd's ``SMTP`` with each command wrapped: the wrapper
writes the command to the transcript, asks the plan what to do, and either
lets the real command run or answers in its place. ``RecordingHandler`` records
each accepted message as a ``SentMail`` with the session's facts.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as ServerEnvelope

from mailer.content.message import Envelope
from mailer.inbox.server import InboxHandler, InboxSMTP
from mailer.records import SentMail
from mailer.testing.server.faults import FaultPlan
from mailer.testing.server.rules import (
    COMMANDS,
    END_OF_DATA,
    GREETING,
    AcceptAndDrop,
    Decision,
    HangUp,
    HangUpInData,
    KeepThenGarbage,
    KeepThenHangUp,
    SendGarbage,
    SendReply,
    StaySilent,
)

SMTPMethod = Callable[[SMTP, str], Awaitable[None]]
FaultableMethod = Callable[["FaultySMTP", str], Awaitable[None]]
# The commands whose aiosmtpd handler is wrapped to consult the fault plan:
# every point a rule can aim at but the two that are not commands.
FAULTABLE_COMMANDS = tuple(c for c in COMMANDS if c not in (GREETING, END_OF_DATA))


def _hide_secret(command: str, argument: str | None) -> str | None:
    # "AUTH PLAIN <base64 of user and password>": keep the mechanism only.
    if command == "AUTH" and argument:
        mechanism, _, secret = argument.partition(" ")
        return f"{mechanism} ***" if secret else mechanism
    return argument


def _faultable(command: str) -> FaultableMethod:
    """Wrap aiosmtpd's ``smtp_<command>`` so the fault plan is asked first."""
    original: SMTPMethod = getattr(SMTP, f"smtp_{command}")

    # wraps() also copies aiosmtpd's @syntax attributes, which HELP reads.
    @functools.wraps(original)
    async def smtp_command(self: FaultySMTP, arg: str) -> None:
        shown = _hide_secret(command, arg)
        self.transcript.append(f"C: {command} {shown}" if shown else f"C: {command}")
        decision = self.plan.evaluate(command, shown, self.number)
        self.hidden_extensions = decision.hide
        if not await self.apply(decision):
            await original(self, arg)

    return smtp_command


class FaultySMTP(InboxSMTP):
    """An inbox session that obeys a FaultPlan and writes a transcript.

    ``session_info()`` and the bounded line length come from ``InboxSMTP``.

    Args:
        handler: The handler (a ``RecordingHandler``).
        plan: The faults to inject.
        number: This session's number on its server, from 1.
        transcript: The list to write the dialogue to (``"C: ..."``/``"S: ..."``).
        options: aiosmtpd ``SMTP`` options, as ``start_inbox`` passes them.
    """

    def __init__(
        self,
        handler: Any,
        *,
        plan: FaultPlan,
        number: int,
        transcript: list[str],
        **options: Any,  # aiosmtpd's SMTP arguments, given by start_inbox
    ) -> None:
        super().__init__(handler, **options)
        self.plan = plan
        self.number = number
        self.transcript = transcript
        self.hidden_extensions: frozenset[str] = frozenset()

    async def _handle_client(self) -> None:
        # Runs once per connection, before aiosmtpd's greeting: the place for
        # greeting faults. (aiosmtpd's own loop is private, but this method is
        # the task it starts; overriding it only adds a step in front.)
        try:
            if await self.apply(self.plan.evaluate(GREETING, None, self.number)):
                return
        except asyncio.CancelledError:
            # The client left (or the server stopped) during a greeting fault.
            # aiosmtpd's loop would close our side; it has not started yet.
            if self.transport is not None:
                self.transport.close()
            raise
        await super()._handle_client()

    async def push(self, status: AnyStr) -> None:
        """Send a reply line and write it to the transcript."""
        await super().push(status)
        self._note_reply(status)

    def _note_reply(self, status: str | bytes) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        self.transcript.extend(f"S: {line}" for line in text.split("\r\n"))

    async def apply(self, decision: Decision) -> bool:
        """Carry out a decision of the plan.

        Returns:
            Whether a fault answered, so the real command must not run.
        """
        if decision.delay:
            # Cancelled with this session's task when the client leaves or
            # the server stops: a long delay never outlives the connection.
            await asyncio.sleep(decision.delay)
        action = decision.action
        if action is None or isinstance(action, AcceptAndDrop):
            return False
        if isinstance(action, SendReply):
            await self.push("\r\n".join(action.lines()))
            if action.close:
                await self.hang_up(graceful=True)
        elif isinstance(action, HangUp):
            await self.hang_up()
        elif isinstance(action, HangUpInData):
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            received = 0
            while received < action.after_bytes:
                chunk = await self._reader.read(action.after_bytes - received)
                if not chunk:
                    break
                received += len(chunk)
            self.transcript.append(f"C: <{received} bytes of the message>")
            await self.hang_up()
        elif isinstance(action, StaySilent):
            await self.wait_until_closed()
        elif isinstance(action, SendGarbage):  # pragma: no branch - last action
            await self.push(action.line)
        return True

    async def hang_up(self, *, graceful: bool = False) -> None:
        """Close the connection and stop this session; never returns normally.

        Args:
            graceful: Send what was written first (after a 421); otherwise
                drop the connection as a crash would.
        """
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not graceful:
            transport.abort()
        elif transport is not None:
            transport.close()
        self.transcript.append("S: <connection closed>")
        await self.wait_until_closed()

    async def wait_until_closed(self) -> None:
        """Wait until the connection ends (aiosmtpd then cancels this task)."""
        await asyncio.get_running_loop().create_future()


# aiosmtpd finds command handlers by name (smtp_MAIL...) when a session starts.
for _command in FAULTABLE_COMMANDS:
    setattr(FaultySMTP, f"smtp_{_command}", _faultable(_command))


class RecordingHandler(InboxHandler):
    """Record each accepted message with its session, for the test server.

    Args:
        plan: The faults to inject (read at EHLO and after the final dot).
        on_message: Called with each message the server keeps.
        pipelining: Advertise PIPELINING (aiosmtpd reads pipelined commands
            in order, so the claim is true).
    """

    def __init__(
        self,
        plan: FaultPlan,
        on_message: Callable[[SentMail], None],
        *,
        pipelining: bool = True,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.keep = on_message
        self.pipelining = pipelining

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: ServerEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Return the EHLO reply lines, less any extension a fault hides."""
        # With this hook aiosmtpd leaves recording the client's name to us.
        session.host_name = hostname
        first, *extensions, last = responses
        if self.pipelining:
            extensions.append("250-PIPELINING")
        hidden = server.hidden_extensions if isinstance(server, FaultySMTP) else ()
        kept = [
            line
            for line in extensions
            if line[4:].split(" ", 1)[0].upper() not in hidden
        ]
        return [first, *kept, last]

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: ServerEnvelope
    ) -> str:
        """Apply end-of-data faults, then record the message and accept it."""
        if not isinstance(server, FaultySMTP):
            raise TypeError("RecordingHandler serves FaultySMTP sessions only")
        content = envelope.original_content or b""
        server.transcript.extend([f"C: <{len(content)} bytes of message>", "C: ."])
        decision = self.plan.evaluate(END_OF_DATA, None, server.number)
        action = decision.action
        if isinstance(action, SendReply) and not action.close:
            decision = Decision(decision.delay, decision.hide, None)
            if action.code >= 400:
                if action.keep:
                    # Kept first, so that a test can see it arrived while the
                    # server still delays its reply.
                    self._accept(server, envelope, content, action.lines())
                await server.apply(decision)
                return "\r\n".join(action.lines())
            return self._accept(server, envelope, content, action.lines())
        if isinstance(action, SendGarbage):
            await server.apply(Decision(decision.delay))
            return action.line
        if isinstance(action, KeepThenGarbage):
            await server.apply(Decision(decision.delay))
            return self._accept(server, envelope, content, [action.line])
        if isinstance(action, KeepThenHangUp):
            await server.apply(Decision(decision.delay))
            self._accept(server, envelope, content, [])
            await server.hang_up()  # never returns: the 250 is never sent
        await server.apply(decision)  # delays, and hang-ups that never return
        number = next(self._numbers)
        reply = [f"250 2.0.0 Ok: queued as {number}"]
        if isinstance(action, AcceptAndDrop):
            self.plan.note_accepted()
            return reply[0]
        return self._accept(server, envelope, content, reply)

    def _accept(
        self,
        server: FaultySMTP,
        envelope: ServerEnvelope,
        content: bytes,
        reply: list[str],
    ) -> str:
        mail_options = tuple(envelope.mail_options)
        record = SentMail(
            envelope=Envelope(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                smtputf8="SMTPUTF8" in (o.upper() for o in mail_options),
            ),
            raw=content,
            mail_options=mail_options,
            session=server.session_info(),
            transcript=(*server.transcript, *(f"S: {line}" for line in reply)),
        )
        self.messages.append(record)
        self.plan.note_accepted()
        self.keep(record)
        return "\r\n".join(reply)
