"""Send one message written on the command line: ``mailer send --to ADDR ...``.

Meant for checking a configuration: the message goes through the same client
and settings as a batch (its first-attempt rule included, so a misconfigured
server costs one attempt), and the server's reply, or the error with the
setting to check, is printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailer.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    fail,
    settings_note,
)
from mailer.config.settings import MailerSettings
from mailer.content.message import Message
from mailer.delivery.client import generate_message_client
from mailer.delivery.control import SendRequest, fatal_reason
from mailer.delivery.results import SendStatus
from mailer.delivery.state import MessageAttempts
from mailer.exceptions import MailerError
from mailer.replies import misconfiguration

if TYPE_CHECKING:
    from mailer.cli.send import ReportWriter


class _LastError:
    """Remember the last attempt's error (an AttemptObserver)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    async def attempt_starting(self, attempts: MessageAttempts, /) -> None:
        """Nothing to do before an attempt."""

    async def attempt_ended(
        self, attempts: MessageAttempts, /, *, retry_in: float | None
    ) -> None:
        """Keep the attempt's error, if it failed."""
        self.error = attempts.last_error


async def send_one(
    settings: MailerSettings,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    report: ReportWriter,
) -> int:
    """Send one message and print what became of it.

    Returns:
        0 sent; 1 not sent; 2 not sent because of a setting (named on stderr).
    """
    try:
        message = Message(to=to, subject=subject, body=text, html=html)
    except MailerError as exc:
        raise fail(str(exc)) from None
    seen = _LastError()
    with report:
        async with generate_message_client(settings) as client:
            [result] = await client.send_many([SendRequest(message, observer=seen)])
        report.write({"line": 0, **result.to_report()})
    if result.status is SendStatus.SENT:
        print(f"sent to {', '.join(result.accepted)}: {result.reply}")
        print(f"Message-ID: {result.message_id}")
        return EXIT_OK
    err.print(f"failed {to}: {result.error}", markup=False)
    if seen.error is not None and misconfiguration(seen.error) is not None:
        err.print(
            f"error: {fatal_reason(seen.error, settings)}{settings_note()}",
            markup=False,
        )
        return EXIT_USAGE
    return EXIT_FAILED
