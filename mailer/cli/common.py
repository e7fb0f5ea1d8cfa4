"""Share what every command needs: the error console, exit codes, options, helpers.

Exit codes: 0 every message was sent; 1 some were not; 2 usage or configuration
errors (one line on stderr, no traceback), including a batch stopped because
every message would fail the same way; 129 (SIGHUP), 130 (SIGINT) and 143
(SIGTERM): stopped by a signal.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console

from mailer.bulk.attachments import RowAttachments
from mailer.bulk.recipients import InvalidRow, RecipientFile
from mailer.config.envfile import env_file_paths
from mailer.config.settings import MailerSettings
from mailer.content.attachments import Attachment
from mailer.exceptions import (
    ConfigError,
    InvalidRecipientsError,
    MailerError,
    RecipientsFileError,
    TemplateNotFoundError,
)

# soft_wrap: an error is one line, whatever the terminal width.
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_ENV_FILE = Path(".env")
# A stream whose reader went away: a closed pipe (`| head -1`), a hung-up
# terminal (EIO), a closed descriptor (EBADF).
_GONE = frozenset({errno.EPIPE, errno.EIO, errno.EBADF})


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on one line and return the usage exit (2)."""
    err.print(f"error: {message}", markup=False)
    return typer.Exit(EXIT_USAGE)


class _Source:
    """Where the settings of this run came from, said with configuration errors."""

    description = ""


SOURCE = _Source()


def settings_note() -> str:
    """Return `` (settings from ...)`` for a configuration error, or nothing."""
    return f" ({SOURCE.description})" if SOURCE.description else ""


def run_command(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; a MailerError becomes one line and exit 2.

    A configuration error (a setting, the templates folder) also says where
    the settings came from: which ``.env`` file, or that none was found.
    """
    try:
        return asyncio.run(coroutine)
    except InvalidRecipientsError as exc:
        print_bad_rows(exc.rows)
        raise fail(str(exc)) from None
    except (ConfigError, TemplateNotFoundError) as exc:
        raise fail(f"{exc}{settings_note()}") from None
    except MailerError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED


def print_bad_rows(rows: Sequence[InvalidRow], *, verb: str = "") -> None:
    """Print bad rows on stderr, one line per distinct reason.

    The same mistake on many rows (a column the template needs and the file
    lacks) is said once, with the number of rows, instead of once per row.
    """
    lines_by_error: dict[str, list[int]] = {}
    for row in rows:
        lines_by_error.setdefault(row.error, []).append(row.line)
    for error, lines in lines_by_error.items():
        where = f"line {lines[0]}" if len(lines) == 1 else _line_span(lines)
        err.print(f"{verb}{where}: {error}", markup=False)


def _line_span(lines: list[int]) -> str:
    """Return ``2000 rows (lines 2-2001)``, or the first line numbers when scattered."""
    if lines == list(range(lines[0], lines[0] + len(lines))):
        return f"{len(lines)} rows (lines {lines[0]}-{lines[-1]})"
    shown = ", ".join(str(line) for line in lines[:5])
    return f"{len(lines)} rows (lines {shown}{', ...' if len(lines) > 5 else ''})"


def load_settings(
    templates_dir: Path | None = None,
    env_file: Path | None = None,
    *,
    announce: bool = False,
) -> MailerSettings:
    """Return the settings, or fail with the one-line error naming the key.

    Args:
        templates_dir: ``--templates-dir``, overriding ``MAILER_TEMPLATES_DIR``.
        env_file: ``--env-file``; by default ``.env`` in the current directory.
        announce: Say on stderr now which ``.env`` file was read, or that none
            was (configuration errors say it anyway).

    Raises:
        typer.Exit: The file given does not exist, or a setting is bad (exit 2).
    """
    if env_file is not None and not env_file.is_file():
        raise fail(
            f"--env-file {env_file}: "
            + ("is a directory" if env_file.is_dir() else "no such file")
        )
    chosen = env_file if env_file is not None else DEFAULT_ENV_FILE
    found = env_file_paths(chosen)
    SOURCE.description = (
        f"settings from {found[0].resolve()} and the environment"
        if found
        else "settings from the environment only: no .env file in "
        f"{Path.cwd()}; --env-file FILE reads another"
    )
    values: dict[str, Any] = {"_env_file": chosen}
    if templates_dir is not None:
        values["templates_dir"] = templates_dir
    try:
        settings = MailerSettings(**values)
    except ConfigError as exc:
        raise fail(f"{exc}{_where_set(exc.key, found)}") from None
    except MailerError as exc:
        raise fail(str(exc)) from None
    if announce:
        err.print(SOURCE.description, markup=False)
    return settings


def _where_set(key: str | None, found: list[Path]) -> str:
    """Return where a bad key was set: the environment wins over the file."""
    if key is None:
        return ""
    if key in os.environ:
        return " (set in the environment)"
    if found:
        return f" (set in {found[0].resolve()})"
    return ""


def open_recipients(path: Path) -> RecipientFile:
    """Open a recipients file, or fail with one line saying why not."""
    try:
        return RecipientFile(path)
    except InvalidRecipientsError as exc:
        raise fail(exc.rows[0].error) from None
    except RecipientsFileError as exc:
        raise fail(str(exc)) from None


def template_name(value: str | None) -> str | None:
    """Return a template set's name as given on the command line, tidied.

    Shell completion of a folder adds a trailing slash (``-t welcome/``), which
    names the same set.
    """
    if value is None:
        return None
    return value.rstrip("/\\") or value


class QuietWhenGone:
    """Wrap stdout or stderr so that a reader going away never changes the outcome.

    ``mailer send ... | head -1`` closes the pipe after one line; the next
    write raises BrokenPipeError and, unhandled, turned a batch that sent
    every message into exit 1 (or a traceback at exit). Once the stream is
    gone, further output is dropped (the report, the journal and the exit
    code still say everything), and the descriptor is pointed at /dev/null
    so that the interpreter's last flush cannot fail either.

    Args:
        stream: ``sys.stdout`` or ``sys.stderr``.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.is_gone = False

    def _guard(self, action: Callable[[], Any], default: Any) -> Any:
        if self.is_gone:
            return default
        try:
            return action()
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._drop()
            return default

    def _drop(self) -> None:
        self.is_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no descriptor to point elsewhere
            pass

    def write(self, text: str) -> int:
        """Write ``text``, or drop it once the reader is gone."""
        written: int = self._guard(lambda: self._stream.write(text), len(text))
        return written

    def flush(self) -> None:
        """Flush, unless the reader is gone."""
        self._guard(self._stream.flush, None)

    def isatty(self) -> bool:
        """Return whether the stream is a terminal (never, once gone)."""
        return bool(self._guard(self._stream.isatty, False))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_TEMPLATE = typer.Option(
    "--template",
    "-t",
    metavar="NAME",
    help="Template set: a folder under MAILER_TEMPLATES_DIR.",
    callback=template_name,
)
_RECIPIENTS = typer.Option(
    "--recipients", "-r", metavar="FILE", help="A .csv, .jsonl or .ndjson file."
)
TemplateOption = Annotated[str, _TEMPLATE]
RecipientsOption = Annotated[Path, _RECIPIENTS]
OptionalTemplateOption = Annotated[str | None, _TEMPLATE]
OptionalRecipientsOption = Annotated[Path | None, _RECIPIENTS]
TemplatesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--templates-dir", metavar="DIR", help="Overrides MAILER_TEMPLATES_DIR."
    ),
]
EnvFileOption = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        metavar="FILE",
        help="Read settings from FILE instead of ./.env (the environment still wins).",
    ),
]
JournalOption = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        metavar="FILE",
        help="Record each message's state in this SQLite file; run the same "
        "command again to resume (what was sent is not sent again).",
    ),
]
AttachOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--attach",
        metavar="FILE",
        help="Attach this file to every message (repeat for more files).",
    ),
]
AttachColumnOption = Annotated[
    str | None,
    typer.Option(
        "--attach-column",
        metavar="COLUMN",
        help="Recipients column naming each row's files (';'-separated), "
        "relative to --attachments-dir.",
    ),
]
AttachmentsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--attachments-dir",
        metavar="DIR",
        help="Where --attach-column's files are (and only there).",
    ),
]


def row_attachments(
    attach: list[Path] | None, column: str | None, directory: Path | None
) -> RowAttachments | None:
    """Return the batch's attachments from the options, or fail with one line."""
    if not attach and column is None and directory is None:
        return None
    if directory is not None and column is None:
        raise fail("--attachments-dir: use it with --attach-column")
    try:
        return RowAttachments.from_paths(
            attach or (), column=column, directory=directory
        )
    except MailerError as exc:
        raise fail(str(exc)) from None


def describe_attachments(attachments: Iterable[Attachment]) -> str:
    """Return ``name (size)`` for each attachment, comma-separated."""
    return ", ".join(
        f"{a.filename} ({format_size(a.size())}"
        + (", inline" if a.disposition == "inline" else "")
        + ")"
        for a in attachments
    )


def format_size(size: int) -> str:
    """Return a byte count for people: 812 B, 14.2 KB, 5.0 MB."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


DedupeOption = Annotated[
    bool,
    typer.Option(
        "--dedupe",
        help="Send once per address: a row whose address (ignoring case) an "
        "earlier row has is skipped and listed, not sent.",
    ),
]
