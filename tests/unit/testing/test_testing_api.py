"""The public names of mailer.testing: sorted, complete, and cheap to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mailer.testing


def test_all_is_sorted_and_every_name_resolves() -> None:
    """__all__ is sorted (constants, classes, functions) and each entry resolves."""

    def kind_then_name(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert mailer.testing.__all__ == sorted(mailer.testing.__all__, key=kind_then_name)
    for name in mailer.testing.__all__:
        assert getattr(mailer.testing, name) is not None, name


def test_the_fake_transports_are_exported_where_the_readme_says() -> None:
    """from mailer.testing import MemoryTransport, MockTransport works (12.17)."""
    from mailer.testing import MemoryTransport, MockTransport
    from mailer.testing.fakes import MemoryTransport as Memory
    from mailer.testing.fakes import MockTransport as Mock

    assert (MemoryTransport, MockTransport) == (Memory, Mock)
    assert {"MemoryTransport", "MockTransport"} <= set(mailer.testing.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A typo fails like any module attribute."""
    with pytest.raises(AttributeError, match="no attribute 'SMTPServerTest'"):
        _ = mailer.testing.SMTPServerTest  # type: ignore[attr-defined]


def test_importing_it_loads_neither_aiosmtpd_nor_trustme_nor_pytest() -> None:
    """The heavy parts load on first use only (checked in a fresh interpreter)."""
    code = (
        "import sys, mailer.testing\n"
        "print(sorted(m for m in ('aiosmtpd', 'trustme', 'pytest') if m in sys.modules))\n"
        "mailer.testing.SMTPTestServer\n"
        "print('aiosmtpd' in sys.modules, 'trustme' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert output == ["[]", "True False"]
