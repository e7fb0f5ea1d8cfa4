"""Make a throwaway certificate authority for tests, so TLS verification stays on."""

from __future__ import annotations

import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trustme

# The names a test server on this machine may be reached by.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TLSBundle:
    """A test CA, a server certificate it signed, and contexts for both ends.

    Attributes:
        ca: The ``trustme.CA`` (to issue more certificates).
        server_context: For the server: a certificate valid for localhost,
            127.0.0.1 and ::1.
        client_context: For a client: trusts the test CA, verifies as usual.
        ca_path: The CA certificate as a PEM file (for ``MAILER_SMTP_CA_FILE``).
    """

    ca: trustme.CA
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    ca_path: Path

    @classmethod
    def create(cls, directory: Path) -> TLSBundle:
        """Make a new CA and server certificate, and write the CA to ``directory``.

        Raises:
            RuntimeError: trustme is not installed
                (``pip install 'aiomailer[testing]'``).
        """
        try:
            import trustme  # heavy, and only needed for TLS
        except ImportError as exc:  # pragma: no cover - the extra is installed here
            raise RuntimeError(
                "TLS test servers need trustme: pip install 'aiomailer[testing]'"
            ) from exc
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*SERVER_NAMES).configure_cert(server_context)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        ca_path = directory / "mailer-test-ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        return cls(ca, server_context, client_context, ca_path)


class OwnedTLSBundle:
    """A TLSBundle in a temporary folder that ``cleanup()`` removes."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="mailer-test-ca-"))
        try:
            self.bundle = TLSBundle.create(self._directory)
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        """Remove the CA file and its folder."""
        shutil.rmtree(self._directory, ignore_errors=True)
