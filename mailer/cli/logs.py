"""Set up logging for a command: ``--log-format text`` (the default) or ``json``.

``json`` writes every record of the ``mailer`` loggers at INFO and above to
standard error, one JSON object per line: ``time`` (UTC, ISO 8601),
``level``, ``logger``, ``message``, the record's own fields (the outcome
records' ``message_id``, ``relay``, ``reply_code``... see
``mailer.delivery.telemetry``) and ``exception`` when there is one.

``text`` keeps the command's own output: the outcome records are not printed
(the report and the summary say the same), while warnings (a relay slowed
down for its rate, TLS relaxed) still reach standard error.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has: what is left of a record's __dict__ are the
# fields its caller passed in ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class LogFormat(enum.StrEnum):
    """How ``mailer send`` writes log records."""

    TEXT = "text"
    JSON = "json"


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object: the usual parts and its extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


@contextmanager
def configured_logging(log_format: LogFormat) -> Iterator[None]:
    """Route mailer's log records for the duration of a command, then restore.

    Args:
        log_format: ``json``: every record of ``mailer.*`` at INFO and above
            as a JSON line on standard error; ``text``: no outcome records.
    """
    if log_format is LogFormat.JSON:
        logger = logging.getLogger("mailer")
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        # Not the DEBUG records of the SMTP dialogue that -v turns on: they
        # have their own lines.
        handler.setLevel(logging.INFO)
        level, propagate = logger.level, logger.propagate
        logger.setLevel(logging.INFO)
        logger.propagate = False
    else:
        # The summary and the failure lines say it all: no outcome record
        # is even made (a refused message's WARNING record cost ~10 us).
        logger = logging.getLogger("mailer.outcome")
        handler = logging.NullHandler()
        level, propagate = logger.level, logger.propagate
        logger.setLevel(logging.CRITICAL + 1)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
