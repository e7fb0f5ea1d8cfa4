"""Run hooks around every send: before_send changes or refuses, after_send sees results.

Register hooks on a client (``client.hooks``), pass them to ``send_messages``
(``hooks=``), or name them in settings for the command line
(``MAILER_BEFORE_SEND`` / ``MAILER_AFTER_SEND``: ``module:function``, comma
separated). A hook may be a plain function or a coroutine function::

    hooks = Hooks()

    @hooks.before_send
    def suppress(message: Message) -> Message | Refuse:
        if any(a.addr_spec in SUPPRESSED for a in message.to):
            return Refuse("address on the suppression list")
        tagged = (*message.headers, ("X-Campaign", "spring"))
        return dataclasses.replace(message, headers=tagged)

    @hooks.after_send
    async def record(message: Message, result: SendResult) -> None:
        await db.save(result.message_id, result.status)

Rules:

* hooks run in the order they were registered (those named in settings
  first); each before hook gets the message the previous one returned;
* a before hook returns the message (changed or not) or ``Refuse(reason)``:
  the message then ends ``failed`` with that reason, nothing is sent and it
  is not retried (``RefusedByHookError`` from ``send``). A before hook that
  raises, or returns anything else, fails the message the same way (when in
  doubt, nothing is sent);
* an after hook is called once with every final result, ``sent``, ``failed``
  or ``pending``, and the message as it was sent; if it raises, the error is
  logged and the result stands (a sent message never turns into a failure);
* ``MAILER_REDIRECT_TO`` (staging) is applied after every before hook, so no
  hook can add a recipient behind it: the message goes to that address
  only, and its To, Cc and Bcc are kept in ``X-Mailer-Original-To``, ``-Cc``
  and ``-Bcc`` headers.

Hooks run inside ``MessageClient.send``: a test that replaces ``send`` (the
``mock_send`` fixture) replaces them too.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from mailer.config.settings import MailerSettings, parse_hook_names
from mailer.content.addresses import Address
from mailer.content.message import Message
from mailer.delivery.results import SendResult
from mailer.exceptions import ConfigError, RefusedByHookError

logger = logging.getLogger("mailer.hooks")

# The headers MAILER_REDIRECT_TO keeps the original recipients in.
ORIGINAL_HEADERS = (
    ("to", "X-Mailer-Original-To"),
    ("cc", "X-Mailer-Original-Cc"),
    ("bcc", "X-Mailer-Original-Bcc"),
)


@dataclass(frozen=True, slots=True)
class Refuse:
    """What a before_send hook returns to stop a message: it fails with ``reason``.

    Attributes:
        reason: Why, in a few words (it becomes the result's error).
    """

    reason: str


BeforeSendResult: TypeAlias = Message | Refuse
BeforeSendHook: TypeAlias = Callable[
    [Message], BeforeSendResult | Awaitable[BeforeSendResult]
]
AfterSendHook: TypeAlias = Callable[[Message, SendResult], Awaitable[None] | None]


class Hooks:
    """The before_send and after_send hooks of a client, in registration order.

    Args:
        before_send: Hooks to register first, in order.
        after_send: Hooks to register first, in order.
        redirect_to: Send every message to this address only (staging); applied
            after every before hook.
    """

    def __init__(
        self,
        *,
        before_send: Iterable[BeforeSendHook] = (),
        after_send: Iterable[AfterSendHook] = (),
        redirect_to: Address | None = None,
    ) -> None:
        self.before: list[BeforeSendHook] = list(before_send)
        self.after: list[AfterSendHook] = list(after_send)
        self.redirect_to = redirect_to

    @classmethod
    def from_settings(cls, settings: MailerSettings) -> Hooks:
        """Return the hooks named by ``MAILER_BEFORE_SEND``, ``MAILER_AFTER_SEND``.

        With ``MAILER_REDIRECT_TO`` set, every message is redirected.

        Raises:
            ConfigError: A named hook cannot be imported or is not callable.
        """
        return cls(
            before_send=_load(settings.before_send, "MAILER_BEFORE_SEND"),
            after_send=_load(settings.after_send, "MAILER_AFTER_SEND"),
            redirect_to=settings.redirect_address,
        )

    def before_send(self, hook: BeforeSendHook, /) -> BeforeSendHook:
        """Register ``hook`` to run before each send (usable as a decorator)."""
        self.before.append(hook)
        return hook

    def after_send(self, hook: AfterSendHook, /) -> AfterSendHook:
        """Register ``hook`` to be told each final result (usable as a decorator)."""
        self.after.append(hook)
        return hook

    def extend(self, other: Hooks, /) -> None:
        """Register ``other``'s hooks after these (and its redirect, if it has one)."""
        self.before.extend(other.before)
        self.after.extend(other.after)
        if other.redirect_to is not None:
            self.redirect_to = other.redirect_to

    @property
    def changes_messages(self) -> bool:
        """Return whether a before hook or a redirect may change or refuse messages."""
        return bool(self.before) or self.redirect_to is not None

    async def run_before(self, message: Message, /) -> Message:
        """Return the message the before hooks (then the redirect) make of ``message``.

        Raises:
            RefusedByHookError: A hook refused the message, raised, or returned
                something other than a Message or Refuse.
        """
        for hook in self.before:
            name = hook_name(hook)
            try:
                outcome = hook(message)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except Exception as exc:
                logger.exception("before_send hook %s failed", name)
                raise RefusedByHookError(
                    f"the hook raised {type(exc).__name__}: {exc}", hook=name
                ) from exc
            if isinstance(outcome, Refuse):
                raise RefusedByHookError(outcome.reason, hook=name)
            if not isinstance(outcome, Message):
                raise RefusedByHookError(
                    f"the hook returned {type(outcome).__name__}; return the "
                    "message (changed or not) or Refuse(reason)",
                    hook=name,
                )
            message = outcome
        if self.redirect_to is not None:
            message = redirect(message, self.redirect_to)
        return message

    async def run_after(self, message: Message, result: SendResult, /) -> None:
        """Tell every after hook about ``result``; an error is logged, never raised."""
        for hook in self.after:
            try:
                outcome = hook(message, result)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                # The result stands: a hook's bug must not turn a sent message
                # into a failure (and so into a resend).
                logger.exception(
                    "after_send hook %s failed for %s (%s); the result stands",
                    hook_name(hook),
                    result.message_id,
                    result.status.value,
                )


def redirect(message: Message, address: Address) -> Message:
    """Return ``message`` addressed to ``address`` only, its recipients in headers."""
    kept = tuple(
        (header, ", ".join(a.addr_spec for a in getattr(message, field)))
        for field, header in ORIGINAL_HEADERS
        if getattr(message, field)
    )
    return dataclasses.replace(
        message, to=(address,), cc=(), bcc=(), headers=(*message.headers, *kept)
    )


def hook_name(hook: object) -> str:
    """Return ``module.qualname`` of a hook, for messages."""
    module = getattr(hook, "__module__", None) or "?"
    name = getattr(hook, "__qualname__", None) or type(hook).__name__
    return f"{module}.{name}"


def _load(names: str | None, key: str) -> list[Callable[..., Any]]:
    """Import each ``module:function`` of a setting."""
    if names is None:
        return []
    hooks: list[Callable[..., Any]] = []
    for module_name, attribute in parse_hook_names(names):
        where = f"{module_name}:{attribute}"
        try:
            target: object = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except ImportError as exc:
            raise ConfigError(f"{key}: cannot import {where}: {exc}", key=key) from None
        except AttributeError:
            raise ConfigError(
                f"{key}: {module_name} has no {attribute}", key=key
            ) from None
        if not callable(target):
            raise ConfigError(f"{key}: {where} is not callable", key=key)
        hooks.append(target)
    return hooks
