"""Shop notifications: the application code under test (it knows nothing of tests)."""

from __future__ import annotations

import asyncio

from mailer import (
    DeliveryError,
    MailerSettings,
    Message,
    SendResult,
    generate_message_client,
)

AUDIT_COPY = "audit@shop.example.test"


async def send_password_reset(
    email: str, code: str, *, settings: MailerSettings | None = None
) -> SendResult:
    """Send a reset code, with a blind copy to the audit mailbox.

    A transient refusal (greylisting, a busy server) is tried once more.
    """
    message = Message(
        to=email,
        bcc=AUDIT_COPY,
        subject="Reset your password",
        body=f"Your reset code is {code}.\nIt expires in 15 minutes.\n",
        html=f"<p>Your reset code is <b>{code}</b>.</p>",
    )
    async with generate_message_client(settings) as client:
        try:
            return await client.send(message)
        except DeliveryError as error:
            if not error.transient:
                raise
            return await client.send(message)


async def send_order_updates(
    orders: list[tuple[str, str]], *, settings: MailerSettings | None = None
) -> list[SendResult]:
    """Tell each customer their order shipped: ``[(email, order_number), ...]``."""
    messages = [
        Message(
            to=email,
            subject=f"Order {number} has shipped",
            body=f"Your order {number} is on its way.\n",
        )
        for email, number in orders
    ]
    async with generate_message_client(settings) as client:
        return await client.send_many(messages)


def send_password_reset_sync(
    email: str, code: str, *, settings: MailerSettings | None = None
) -> SendResult:
    """The same, for synchronous callers (a CLI, a sync web view)."""
    return asyncio.run(send_password_reset(email, code, settings=settings))
