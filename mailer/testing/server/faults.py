"""Plan deterministic SMTP faults for the test server: where, what, and how often.

A ``FaultPlan`` is a list of rules. Each rule aims at one point of the SMTP
dialogue (a command such as ``"MAIL"``, or ``GREETING`` and ``END_OF_DATA``),
optionally at one recipient, and fires a given number of ``times``, after
letting the first ``after`` matches through. Every firing is recorded, so a test
can assert that its fault really happened::

    rule = server.faults.reply("MAIL", 451, "4.7.1 Try again later", times=1)
    ...
    assert rule.fired == 1

Rules are tried in the order they were added; the first one that fires answers
the command. Delays and hidden EHLO extensions do not answer anything: they add
up and the command then goes on (to a later rule, or to the real server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from mailer.testing.server.rules import (
    COMMANDS,
    END_OF_DATA,
    GREETING,
    AcceptAndDrop,
    Action,
    ChaosRule,
    Decision,
    Delay,
    FaultRule,
    Firing,
    HangUp,
    HangUpInData,
    HideExtensions,
    KeepThenGarbage,
    KeepThenHangUp,
    RateLimitRule,
    SendGarbage,
    SendReply,
    StaySilent,
    is_modifier,
)

DEFAULT_GARBAGE = "?? this line is not an SMTP reply"
# The malformed final replies of malformed_final_reply(): a line that is not a
# reply, a reply line longer than aiosmtplib's limit (8,192 bytes), and the
# text of a reply without its code.
MALFORMED_REPLIES = {
    "garbage": DEFAULT_GARBAGE,
    "too_long": "250 2.0.0 Ok: queued " + "x" * 9000,
    "no_code": "Ok: queued as 12345",
}


class FaultPlan:
    """The faults a test SMTP server will inject, and a record of those that fired.

    Safe to change from another thread than the server's (the threaded server).

    Attributes:
        clock: The clock rate limits read (``time.monotonic``; tests may swap it).
    """

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.monotonic
        self._rules: list[FaultRule] = []
        self._firings: list[Firing] = []
        self._lock = threading.Lock()

    # -- planning ---------------------------------------------------------

    def reply(
        self,
        command: str,
        code: int,
        text: str | None = None,
        *,
        times: int | None = None,
        after: int = 0,
        recipient: str | None = None,
        close: bool | None = None,
        keep: bool = False,
    ) -> FaultRule:
        r"""Answer ``command`` with ``code`` and ``text`` instead of the server.

        Args:
            command: One of ``COMMANDS`` (``"MAIL"``, ``"RCPT"``, ``"DATA"``,
                ``END_OF_DATA`` for the reply after the final dot, ``"EHLO"``,
                ``"AUTH"``, ``"STARTTLS"``, ``"NOOP"``, ``"RSET"``...).
            code: A 4xx or 5xx code; at ``END_OF_DATA`` a 2xx code also works
                (the message is then accepted with your text).
            text: The reply text (``"\n"`` for several lines); a generic one by
                default.
            times: Fire at most this many times (default: every time).
            after: Let this many matching commands through first.
            recipient: Only for ``"RCPT"``: fire for this address only
                (case-insensitive).
            close: Close the connection after replying; by default only for 421.
            keep: Only at ``END_OF_DATA`` with a 4xx/5xx code: keep the message
                (it reaches the outbox) and answer the failure all the same,
                so that a resend arrives a second time and the two copies
                can be compared.

        Returns:
            The rule, to check how often it fired.

        Raises:
            ValueError: An unknown command, a code out of range, a bad count.
        """
        point = _point(command)
        if not 200 <= code <= 599 or (code < 400 and point != END_OF_DATA):
            raise ValueError(
                f"code: {code} is not a fault reply at {point} (use 400-599"
                + (", or 2xx at END_OF_DATA)" if point != END_OF_DATA else ")")
            )
        if recipient is not None and point != "RCPT":
            raise ValueError("recipient: only a RCPT rule can aim at one recipient")
        if code < 400 and close:
            raise ValueError("close: an accepting reply cannot close the connection")
        if keep and (point != END_OF_DATA or code < 400):
            raise ValueError("keep: only with END_OF_DATA and a 4xx or 5xx code")
        text = _reply_text(code, text, point)
        action = SendReply(
            code, text, close if close is not None else code == 421, keep=keep
        )
        target = f" for {recipient}" if recipient is not None else ""
        return self._add(
            FaultRule(
                f"reply {point}{target} {code} {text.splitlines()[0]}"
                + (" (message kept)" if keep else "")
                + _count_words(times, after),
                point,
                action,
                times=_times(times),
                after=_after(after),
                recipient=recipient,
            )
        )

    def greeting(
        self, code: int = 421, text: str | None = None, *, times: int | None = None
    ) -> FaultRule:
        """Refuse connections: greet with ``code`` and close.

        Args:
            code: 421 (try later) or 554 (go away).
            text: The greeting text.
            times: Refuse this many connections (default: all).
        """
        return self.reply(GREETING, code, text, times=times, close=True)

    def no_greeting(self, *, times: int | None = None, after: int = 0) -> FaultRule:
        """Accept connections but never greet: the client must time out."""
        return self._add(
            FaultRule(
                "no greeting" + _count_words(times, after),
                GREETING,
                StaySilent(),
                times=_times(times),
                after=_after(after),
            )
        )

    def hide_extensions(
        self, *names: str, times: int | None = None, after: int = 0
    ) -> FaultRule:
        """Leave extensions out of the EHLO reply (STARTTLS, AUTH, SIZE, SMTPUTF8...).

        The server still understands them if the client tries anyway: this is
        the downgrade a man in the middle would attempt.

        Args:
            names: Extension keywords, any case.
            times: Hide them from this many EHLOs (default: all).
            after: Let this many EHLOs through first.
        """
        if not names:
            raise ValueError("names: give at least one extension to hide")
        hidden = frozenset(name.upper() for name in names)
        return self._add(
            FaultRule(
                f"hide {', '.join(sorted(hidden))} from EHLO"
                + _count_words(times, after),
                "EHLO",
                HideExtensions(hidden),
                times=_times(times),
                after=_after(after),
            )
        )

    def delay(
        self,
        command: str,
        seconds: float,
        *,
        times: int | None = None,
        after: int = 0,
        recipient: str | None = None,
    ) -> FaultRule:
        """Wait ``seconds`` before handling ``command`` (for client timeout tests).

        The wait ends at once if the client disconnects or the server stops.

        Args:
            command: One of ``COMMANDS``; ``GREETING`` delays the greeting and
                ``END_OF_DATA`` the reply to the message.
            seconds: How long to wait.
            times: Delay this many times (default: every time).
            after: Let this many matching commands through first.
            recipient: Only for ``"RCPT"``: delay for this address only.
        """
        point = _point(command)
        if not seconds >= 0:
            raise ValueError(f"seconds: must be 0 or more, not {seconds!r}")
        if recipient is not None and point != "RCPT":
            raise ValueError("recipient: only a RCPT rule can aim at one recipient")
        return self._add(
            FaultRule(
                f"delay {point} {seconds}s" + _count_words(times, after),
                point,
                Delay(seconds),
                times=_times(times),
                after=_after(after),
                recipient=recipient,
            )
        )

    def disconnect(
        self,
        after: str | None = None,
        *,
        during: str | None = None,
        times: int | None = None,
        skip: int = 0,
        after_bytes: int = 1,
        keep: bool = False,
    ) -> FaultRule:
        """Drop the connection without replying.

        ``disconnect(after="RCPT")`` reads the RCPT command and hangs up;
        ``disconnect(after=END_OF_DATA)`` receives the whole message and hangs
        up instead of answering it (the client cannot know whether it was
        delivered); with ``keep=True`` the message is delivered first (it
        reaches the outbox), so a client that resends makes a duplicate;
        ``disconnect(during="DATA")`` answers DATA with 354, reads
        ``after_bytes`` of the message and hangs up in the middle of it.

        Args:
            after: The command (or ``GREETING``, ``END_OF_DATA``) to hang up on.
            during: ``"DATA"``: hang up while the message is being sent.
            times: Hang up this many times (default: every time).
            skip: Let this many matching commands through first (``after``
                names the command here).
            after_bytes: With ``during="DATA"``: bytes to read before hanging up.
            keep: With ``after=END_OF_DATA``: deliver the message, then hang up.
        """
        if (after is None) == (during is None):
            raise ValueError("disconnect: give exactly one of after= or during=")
        if keep and (after is None or _point(after) != END_OF_DATA):
            raise ValueError("keep: only with after=END_OF_DATA")
        if after is not None:
            point = _point(after)
            return self._add(
                FaultRule(
                    f"disconnect at {point}"
                    + (" keeping the message" if keep else "")
                    + _count_words(times, skip),
                    point,
                    KeepThenHangUp() if keep else HangUp(),
                    times=_times(times),
                    after=_after(skip, name="skip"),
                )
            )
        if str(during).upper() != "DATA":
            raise ValueError(f"during: only 'DATA' is supported, not {during!r}")
        if after_bytes < 1:
            raise ValueError("after_bytes: must be 1 or more")
        return self._add(
            FaultRule(
                f"disconnect during DATA after {after_bytes} byte(s)"
                + _count_words(times, skip),
                "DATA",
                HangUpInData(after_bytes),
                times=_times(times),
                after=_after(skip, name="skip"),
            )
        )

    def accept_then_drop(
        self, *, times: int | None = None, after: int = 0
    ) -> FaultRule:
        """Answer 250 to a message and lose it: it never reaches the outbox."""
        return self._add(
            FaultRule(
                "accept then drop the message" + _count_words(times, after),
                END_OF_DATA,
                AcceptAndDrop(),
                times=_times(times),
                after=_after(after),
            )
        )

    def garbage(
        self,
        command: str,
        line: str = DEFAULT_GARBAGE,
        *,
        times: int | None = None,
        after: int = 0,
    ) -> FaultRule:
        """Answer ``command`` with a line that is not an SMTP reply.

        Args:
            command: One of ``COMMANDS``.
            line: What to send instead of the reply (no line breaks).
            times: Fire at most this many times (default: every time).
            after: Let this many matching commands through first.
        """
        point = _point(command)
        if "\r" in line or "\n" in line:
            raise ValueError("line: must be a single line")
        return self._add(
            FaultRule(
                f"garbage at {point}: {line!r}" + _count_words(times, after),
                point,
                SendGarbage(line),
                times=_times(times),
                after=_after(after),
            )
        )

    def malformed_final_reply(
        self, form: str = "garbage", *, times: int | None = None, after: int = 0
    ) -> FaultRule:
        """Keep the message, then answer its final dot with a malformed line.

        The message reaches the outbox, but the client cannot read the reply:
        it cannot know the message was delivered (a resend is a duplicate).

        Args:
            form: ``"garbage"`` (a line that is not a reply), ``"too_long"`` (a
                250 line longer than 8,192 bytes) or ``"no_code"`` (reply text
                without its code).
            times: Fire at most this many times (default: every time).
            after: Let this many messages through first.
        """
        if form not in MALFORMED_REPLIES:
            raise ValueError(
                f"form: use one of {', '.join(MALFORMED_REPLIES)}, not {form!r}"
            )
        return self._add(
            FaultRule(
                f"keep the message, then a malformed final reply ({form})"
                + _count_words(times, after),
                END_OF_DATA,
                KeepThenGarbage(MALFORMED_REPLIES[form]),
                times=_times(times),
                after=_after(after),
            )
        )

    def rate_limit(
        self,
        max_messages: int,
        per: float,
        *,
        code: int = 421,
        text: str = "4.7.0 Too many messages, slow down",
    ) -> FaultRule:
        """Refuse MAIL once ``max_messages`` were accepted within ``per`` seconds.

        With the default 421 the server also closes the connection, as busy
        providers do. Messages count when the server answers their final dot
        with 2xx; the window slides on ``self.clock``.

        Args:
            max_messages: Messages allowed per window.
            per: The window, in seconds.
            code: The refusal code.
            text: The refusal text.
        """
        if max_messages < 1 or not per > 0:
            raise ValueError("rate_limit: max_messages >= 1 and per > 0 are required")
        if not 400 <= code <= 599:
            raise ValueError(f"code: {code} is not a refusal (use 400-599)")
        return self._add(
            RateLimitRule(
                f"rate limit {max_messages} per {per}s: {code} {text}",
                SendReply(code, text, code == 421),
                max_messages=max_messages,
                per=per,
                clock=lambda: self.clock(),
            )
        )

    def chaos(
        self,
        *,
        seed: int,
        rate: float = 0.2,
        commands: Iterable[str] = ("MAIL", "RCPT", "DATA", END_OF_DATA),
        replies: Iterable[tuple[int, str]] = (
            (451, "4.3.0 Temporary failure (chaos)"),
            (421, "4.3.2 Service shutting down (chaos)"),
        ),
        times: int | None = None,
        disconnects: bool = False,
    ) -> FaultRule:
        """Inject random transient replies (and hang-ups), reproducibly.

        Each time a client reaches one of ``commands``, the rule draws from a
        generator seeded with ``seed``: the same seed and the same dialogue give
        the same faults, so a failing run can be replayed (send one message at a
        time for a dialogue that does not depend on task scheduling).

        Args:
            seed: The generator's seed.
            rate: The chance (0-1) that each command gets a fault.
            commands: Where faults may strike.
            replies: ``(code, text)`` pairs to pick from.
            times: Fire at most this many times (default: no limit).
            disconnects: Also hang up at random: at once at MAIL or RCPT, in
                the middle of the message at DATA, and after the final dot
                either losing the message or delivering it first.
        """
        points = frozenset(_point(command) for command in commands)
        if not 0 <= rate <= 1:
            raise ValueError(f"rate: must be between 0 and 1, not {rate!r}")
        choices = tuple(
            SendReply(code, _reply_text(code, text, "chaos"), code == 421)
            for code, text in replies
        )
        if not choices or any(not 400 <= r.code <= 599 for r in choices):
            raise ValueError("replies: give (code, text) pairs with 4xx/5xx codes")
        return self._add(
            ChaosRule(
                f"chaos seed={seed} rate={rate} at {', '.join(sorted(points))}"
                + (" with hang-ups" if disconnects else ""),
                commands=points,
                rate=rate,
                replies=choices,
                seed=seed,
                times=_times(times),
                disconnects=disconnects,
            )
        )

    # -- checking ---------------------------------------------------------

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        """Return the rules, in the order they are tried."""
        with self._lock:
            return tuple(self._rules)

    @property
    def firings(self) -> tuple[Firing, ...]:
        """Return every firing of every rule, oldest first."""
        with self._lock:
            return tuple(self._firings)

    def assert_all_fired(self) -> None:
        """Check that every rule fired at least once.

        Raises:
            AssertionError: Naming the rules that never fired.
        """
        idle = [rule.description for rule in self.rules if rule.fired == 0]
        if idle:
            raise AssertionError("faults that never fired: " + "; ".join(idle))

    def clear(self) -> None:
        """Remove every rule and forget every firing."""
        with self._lock:
            self._rules.clear()
            self._firings.clear()

    # -- used by the server -----------------------------------------------

    def evaluate(self, command: str, argument: str | None, session: int) -> Decision:
        """Decide what happens at ``command`` in ``session``, and record firings.

        Args:
            command: One of ``COMMANDS``.
            argument: The command's argument (with AUTH secrets already hidden).
            session: The session number, from 1.
        """
        delay = 0.0
        hidden: set[str] = set()
        answer: Action | None = None
        with self._lock:
            for rule in self._rules:
                if not rule.is_armed or not rule.targets(command, argument):
                    continue
                if answer is not None and not is_modifier(rule.action):
                    continue
                rule.matches += 1
                if rule.matches <= rule.after or not rule.wants_to_fire():
                    continue
                action = rule.next_action()
                firing = Firing(
                    rule.description, command, argument, session, time.monotonic()
                )
                rule.firings.append(firing)
                self._firings.append(firing)
                if isinstance(action, Delay):
                    delay += action.seconds
                elif isinstance(action, HideExtensions):
                    hidden |= action.names
                else:
                    answer = action
        return Decision(delay, frozenset(hidden), answer)

    def note_accepted(self) -> None:
        """Hear that the server accepted a message (for rate limits)."""
        now = self.clock()
        with self._lock:
            for rule in self._rules:
                rule.note_accepted(now)

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule


def _point(command: str) -> str:
    point = command.upper()
    if point not in COMMANDS:
        raise ValueError(
            f"command: unknown {command!r}; use one of {', '.join(COMMANDS)}"
        )
    return point


def _times(times: int | None) -> int | None:
    if times is not None and times < 1:
        raise ValueError(f"times: must be 1 or more (or None), not {times!r}")
    return times


def _after(after: int, *, name: str = "after") -> int:
    if after < 0:
        raise ValueError(f"{name}: must be 0 or more, not {after!r}")
    return after


def _reply_text(code: int, text: str | None, point: str) -> str:
    if text is None:
        return f"{code // 100}.0.0 Fault injected at {point}"
    if "\r" in text:
        raise ValueError("text: use '\\n' to separate the lines of a reply")
    return text


def _count_words(times: int | None, after: int) -> str:
    words = ""
    if times is not None:
        words += f" x{times}"
    if after:
        words += f" after {after}"
    return words


__all__ = ["COMMANDS", "END_OF_DATA", "GREETING", "FaultPlan", "FaultRule", "Firing"]
