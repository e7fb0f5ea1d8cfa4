"""The ``mailer`` command line (nothing else in the package imports it)."""

from mailer.cli.app import main

__all__ = ["main"]
