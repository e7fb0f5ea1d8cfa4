"""The public names: __all__ is sorted, complete and importable."""

from __future__ import annotations

import subprocess
import sys
import typing

import mailer
import mailer.transports


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


def _mailer_classes_in(hint: object, found: set[type]) -> None:
    """Collect the mailer classes a type hint mentions (through unions, generics)."""
    if isinstance(hint, type) and hint.__module__.startswith("mailer."):
        found.add(hint)
    for arg in typing.get_args(hint):
        _mailer_classes_in(arg, found)


def _hints(obj: object) -> list[object]:
    # Names imported only for type checking resolve from the public namespace.
    try:
        return list(typing.get_type_hints(obj, localns=vars(mailer)).values())
    except TypeError:  # not annotatable (a builtin slot wrapper)
        return []


def test_every_class_in_a_public_signature_is_exported() -> None:
    """A type users meet in a public signature can be imported from a public module."""
    exported = {
        getattr(module, name)
        for module in (mailer, mailer.transports)
        for name in module.__all__
    }
    found: set[type] = set()
    for name in mailer.__all__:
        obj = getattr(mailer, name)
        targets = [obj]
        if isinstance(obj, type):
            targets += [
                member
                for attribute, member in vars(obj).items()
                if callable(member)
                and not attribute.startswith(("_", "model_"))  # pydantic's own
            ]
            targets.append(obj.__init__)
        for target in targets:
            for hint in _hints(target):
                _mailer_classes_in(hint, found)
    assert {cls.__qualname__ for cls in found - exported} == set()


def test_importing_mailer_loads_no_test_kit_and_no_test_server() -> None:
    """`import mailer` loads neither mailer.testing nor aiosmtpd nor trustme."""
    code = (
        "import sys, mailer\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.startswith(('mailer.testing', 'aiosmtpd', 'trustme'))))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output == "[]\n"
