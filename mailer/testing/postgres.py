"""Run a throwaway PostgreSQL server for tests: a temporary cluster on loopback.

::

    with TemporaryPostgres() as server:
        settings = MailerSettings(queue_dsn=server.dsn)

The cluster lives in a temporary directory (data, unix socket, log), listens on
127.0.0.1 and a free port, and is removed when the block ends. TCP logins use
a password (SCRAM), so the DSN holds a secret as a real one would. Durability
is off (``fsync=off``): a test database need not survive a power cut.

PostgreSQL refuses to run as root. Run as root (as CI does), the server runs
as an unprivileged user (``nobody``, or ``run_as=``) that owns the cluster's
directory.

The server binaries are looked up in ``$POSTGRES_BINDIR`` (an environment
variable of the test harness, not a mailer setting), then Debian's
``/usr/lib/postgresql/<version>/bin`` (newest first), then ``pg_config
--bindir``, then ``PATH``, then the ``pgserver`` package's. When none is
found, ``make test`` installs Debian's ``postgresql`` package (as root) or
``pgserver`` into the virtual environment (otherwise).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

BINDIR_VARIABLE = "POSTGRES_BINDIR"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT = 60.0
DATABASE = "mailer_test"
USER = "mailer"


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl) were found."""


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``.

    Raises:
        PostgresNotFoundError: None was found; the message says how to get one.
    """
    candidates: list[Path] = []
    if configured := os.environ.get(BINDIR_VARIABLE):
        candidates.append(Path(configured))
    if DEBIAN_ROOT.is_dir():
        versions = sorted(
            (p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates += [version / "bin" for version in versions]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(  # noqa: S603 - a fixed command
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            candidates.append(Path(bindir))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    # The pip-installable server (pgserver, Apache-2.0) that `make test`
    # installs where neither Debian's package nor root is available.
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresNotFoundError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: run `make "
        "postgres-server` (Debian's 'postgresql' package as root, else the "
        f"'pgserver' package), or set {BINDIR_VARIABLE} to their directory"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TemporaryPostgres:
    """A PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port.

    Args:
        run_as: The user the server runs as when this process is root
            (PostgreSQL refuses root); default ``nobody``.
        bindir: Where ``initdb`` and ``pg_ctl`` are; default ``find_bindir()``.

    Attributes:
        dsn: ``postgresql://mailer:<password>@127.0.0.1:<port>/mailer_test``.
        port: The TCP port.
    """

    def __init__(self, *, run_as: str = "nobody", bindir: Path | None = None) -> None:
        self.bindir = bindir if bindir is not None else find_bindir()
        self.run_as = run_as if os.geteuid() == 0 else None
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self.root: Path | None = None

    @property
    def dsn(self) -> str:
        """Return the URL of the test database (it holds the password)."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *command: str, timeout: float = START_TIMEOUT) -> None:
        user = self.run_as
        result = subprocess.run(  # noqa: S603 - our own arguments
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            cwd=self.root,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self) -> None:
        """Create the cluster, start the server and create the test database."""
        # Not under pytest's tmp_path: that is private to root (0700), and the
        # server may run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
        data, sockets = self.root / "data", self.root / "sockets"
        sockets.mkdir()
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n", encoding="utf-8")
        if self.run_as is not None:
            account = pwd.getpwnam(self.run_as)
            for path in (self.root, sockets, password_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--pwfile",
            str(password_file),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        )
        password_file.unlink()
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",  # never anything but loopback
                f"-c unix_socket_directories={sockets}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                "-c shared_buffers=64MB",
            ]
        )
        for _attempt in range(5):
            self.port = free_port()
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(self.root / "server.log"),
                    "-o",
                    f"-p {self.port} {options}",
                    "-w",
                    "-t",
                    str(int(START_TIMEOUT)),
                    "start",
                )
            except RuntimeError:
                continue  # the port was taken between the probe and the start
            break
        else:
            raise RuntimeError(f"PostgreSQL did not start: see {self.root}/server.log")
        self._run(
            str(self.bindir / "psql"),
            "-h",
            str(sockets),
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            "postgres",
            "-q",
            "-c",
            f"CREATE DATABASE {DATABASE}",
        )

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        if self.root is None:
            return
        data = self.root / "data"
        if data.is_dir():
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> TemporaryPostgres:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
