"""The public names: __all__ is sorted, complete and importable."""

from __future__ import annotations

import mailer


def test_all_is_sorted_and_every_name_exists() -> None:
    """__all__ is sorted and each entry resolves."""
    assert mailer.__all__ == sorted(mailer.__all__)
    for name in mailer.__all__:
        assert hasattr(mailer, name), name


def test_the_contract_names_are_exported() -> None:
    """The names the issues fix are public."""
    for name in [
        "Message",
        "MailerSettings",
        "MessageClient",
        "generate_message_client",
        "render",
        "send_messages",
    ]:
        assert name in mailer.__all__


def test_every_public_exception_is_a_mailer_error() -> None:
    """Catching MailerError catches every error mailer raises."""
    errors = [getattr(mailer, n) for n in mailer.__all__ if n.endswith("Error")]
    assert errors
    for error in errors:
        assert issubclass(error, mailer.MailerError), error
