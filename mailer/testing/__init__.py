"""Test doubles for code that sends mail."""

from mailer.testing.records import SentMail

__all__ = ["SentMail"]
