"""Show the SMTP dialogue on stderr for ``-v`` (AUTH hidden, the password redacted)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from mailer.transports.smtp.dialogue import logger

VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Show the SMTP dialogue on stderr (AUTH hidden, content summed up).",
    ),
]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write to whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("smtp %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Write one dialogue line to the current stderr."""
        self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def showing_dialogue(verbose: bool) -> Iterator[None]:
    """Log the dialogue to stderr for the duration of the block, if ``verbose``."""
    if not verbose:
        yield
        return
    handler = _StderrHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
