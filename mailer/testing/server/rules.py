"""Define fault actions and rules: what an injected fault does, and when it fires."""

from __future__ import annotations

import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

GREETING = "GREETING"
"""The server's first words, on connection (``220 ...``)."""

END_OF_DATA = "END_OF_DATA"
"""After the final dot of the message, where the reply that accepts it goes."""

COMMANDS = (
    GREETING,
    "EHLO",
    "HELO",
    "STARTTLS",
    "AUTH",
    "MAIL",
    "RCPT",
    "DATA",
    END_OF_DATA,
    "RSET",
    "NOOP",
    "VRFY",
    "QUIT",
)
"""Every point a rule can aim at."""

_RCPT_ADDRESS = re.compile(r"<([^>]*)>")


@dataclass(frozen=True, slots=True)
class SendReply:
    r"""Answer with this reply instead of the server's own.

    Attributes:
        code: The SMTP reply code.
        text: The reply text; a ``"\n"`` makes a multi-line reply.
        close: Close the connection after replying (as a 421 means).
        keep: At ``END_OF_DATA`` with a 4xx/5xx code: keep the message (it
            reaches the outbox) and still answer the failure, as a server
            whose reply is lost or wrong does; the client resends it.
    """

    code: int
    text: str
    close: bool
    keep: bool = False

    def lines(self) -> list[str]:
        """Return the reply as the lines to send (``"250-a"``, ``"250 b"``)."""
        *first, last = self.text.split("\n")
        return [f"{self.code}-{part}" for part in first] + [f"{self.code} {last}"]


@dataclass(frozen=True, slots=True)
class HangUp:
    """Close the connection at once, without replying."""


@dataclass(frozen=True, slots=True)
class HangUpInData:
    """Answer DATA with 354, read part of the message, then drop the connection.

    Attributes:
        after_bytes: How many bytes of the message to read before dropping.
    """

    after_bytes: int


@dataclass(frozen=True, slots=True)
class KeepThenHangUp:
    """Keep the message (it is delivered), then drop the connection unanswered.

    The one case no SMTP client can settle (RFC 1047): the message arrived,
    the client never heard so, and a resend makes a duplicate.
    """


@dataclass(frozen=True, slots=True)
class StaySilent:
    """Keep the connection open and never say anything (a greeting that never comes)."""


@dataclass(frozen=True, slots=True)
class SendGarbage:
    """Answer with a line that is not an SMTP reply.

    Attributes:
        line: The line sent instead of the reply.
    """

    line: str


@dataclass(frozen=True, slots=True)
class KeepThenGarbage:
    """Keep the message (it is delivered), then answer the final dot with a bad line.

    The client cannot read the reply, so it cannot know the message arrived:
    a resend makes a duplicate, which it must count as ambiguous.

    Attributes:
        line: The malformed line sent instead of the reply.
    """

    line: str


@dataclass(frozen=True, slots=True)
class AcceptAndDrop:
    """Answer 250 to the message and then lose it (it never reaches the outbox)."""


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait before going on with the command (the wait ends if the client leaves).

    Attributes:
        seconds: How long to wait.
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class HideExtensions:
    """Leave these extensions out of the EHLO reply.

    Attributes:
        names: Upper-case extension keywords (``"STARTTLS"``, ``"AUTH"``).
    """

    names: frozenset[str]


Action = (
    SendReply
    | HangUp
    | HangUpInData
    | KeepThenHangUp
    | StaySilent
    | SendGarbage
    | KeepThenGarbage
    | AcceptAndDrop
    | Delay
    | HideExtensions
)


def is_modifier(action: Action) -> bool:
    """Return whether ``action`` changes how a command runs without answering it."""
    return isinstance(action, Delay | HideExtensions)


@dataclass(frozen=True, slots=True)
class Firing:
    """One time a rule fired.

    Attributes:
        rule: The rule's description (``"reply MAIL 451 ..."``).
        command: Where it fired (``"MAIL"``, ``GREETING``, ``END_OF_DATA``...).
        argument: The command's argument (AUTH credentials hidden), if any.
        session: The server session it fired in, from 1.
        at: When it fired (``time.monotonic()``).
    """

    rule: str
    command: str
    argument: str | None
    session: int
    at: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What the server should do at one point of a session.

    Attributes:
        delay: Seconds to wait first.
        hide: EHLO extensions to leave out.
        action: The fault that answers instead of the server, if any.
    """

    delay: float = 0.0
    hide: frozenset[str] = frozenset()
    action: Action | None = None


class FaultRule:
    """One planned fault and the record of when it fired.

    Made by the ``FaultPlan`` methods, which return it so a test can check it.
    """

    def __init__(
        self,
        description: str,
        command: str,
        action: Action,
        *,
        times: int | None = None,
        after: int = 0,
        recipient: str | None = None,
    ) -> None:
        self.description = description
        self.command = command
        self.action = action
        self.times = times
        self.after = after
        self.recipient = recipient.casefold() if recipient is not None else None
        self.matches = 0
        self.firings: list[Firing] = []
        self._disarmed = False

    @property
    def fired(self) -> int:
        """Return how many times the rule fired."""
        return len(self.firings)

    @property
    def is_armed(self) -> bool:
        """Return whether the rule can still fire."""
        if self._disarmed:
            return False
        return self.times is None or self.fired < self.times

    def disarm(self) -> None:
        """Stop the rule from firing again (its record is kept)."""
        self._disarmed = True

    def assert_fired(self, times: int | None = None) -> None:
        """Check that the rule fired (exactly ``times`` times, if given).

        Raises:
            AssertionError: It did not.
        """
        if times is None and self.fired == 0:
            raise AssertionError(f"fault never fired: {self.description}")
        if times is not None and self.fired != times:
            raise AssertionError(
                f"fault fired {self.fired} time(s), expected {times}: "
                f"{self.description}"
            )

    def targets(self, command: str, argument: str | None) -> bool:
        """Return whether an event at ``command`` with ``argument`` is this rule's."""
        if command != self.command:
            return False
        if self.recipient is None:
            return True
        found = _RCPT_ADDRESS.search(argument or "")
        return found is not None and found.group(1).casefold() == self.recipient

    def wants_to_fire(self) -> bool:
        """Return whether the rule fires on a targeted event past ``after``."""
        return True

    def next_action(self) -> Action:
        """Return the action for this firing."""
        return self.action

    def note_accepted(self, at: float) -> None:
        """Hear that the server accepted a message (rate limits count these)."""

    def __repr__(self) -> str:
        return f"<FaultRule {self.description}, fired {self.fired}>"


class RateLimitRule(FaultRule):
    """Refuse MAIL once ``max_messages`` were accepted in the last ``per`` seconds."""

    def __init__(
        self,
        description: str,
        action: SendReply,
        *,
        max_messages: int,
        per: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(description, "MAIL", action)
        self.max_messages = max_messages
        self.per = per
        self._clock = clock
        self._accepted: deque[float] = deque()

    def note_accepted(self, at: float) -> None:
        """Count one accepted message."""
        self._accepted.append(at)

    def wants_to_fire(self) -> bool:
        """Return whether the window already holds ``max_messages`` messages."""
        now = self._clock()
        while self._accepted and self._accepted[0] <= now - self.per:
            self._accepted.popleft()
        return len(self._accepted) >= self.max_messages


class ChaosRule(FaultRule):
    """Fire at random, from a seeded generator: the same seed, the same faults."""

    def __init__(
        self,
        description: str,
        *,
        commands: frozenset[str],
        rate: float,
        replies: tuple[SendReply, ...],
        seed: int,
        times: int | None,
        disconnects: bool = False,
    ) -> None:
        super().__init__(description, "*", replies[0], times=times)
        self.commands = commands
        self.rate = rate
        self.replies = replies
        self.disconnects = disconnects
        self._command = ""
        self._random = random.Random(seed)  # noqa: S311 - test faults, not secrets

    def targets(self, command: str, argument: str | None) -> bool:
        """Return whether ``command`` is one chaos may hit."""
        self._command = command  # next_action follows at once, under the lock
        return command in self.commands

    def wants_to_fire(self) -> bool:
        """Draw once per event: fire with probability ``rate``."""
        return self._random.random() < self.rate

    def next_action(self) -> Action:
        """Pick one of the replies, or (with ``disconnects``) a hang-up.

        A hang-up fits where it strikes: in the middle of the message at DATA;
        after the final dot, either losing the message or keeping it (then the
        client cannot know it was delivered); elsewhere, at once.
        """
        hang_ups: tuple[Action, ...] = ()
        if self.disconnects:
            if self._command == "DATA":
                hang_ups = (HangUpInData(1),)
            elif self._command == END_OF_DATA:
                hang_ups = (HangUp(), KeepThenHangUp())
            else:
                hang_ups = (HangUp(),)
        choices: tuple[Action, ...] = (*self.replies, *hang_ups)
        return self._random.choice(choices)
