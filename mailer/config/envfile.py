r"""Read ``.env`` files literally (no ``${VAR}`` expansion); a bad line is an error.

python-dotenv, as pydantic-settings calls it, expands ``${VAR}`` in every value,
single-quoted ones included, so a password holding ``$`` silently became
another string (and the server answered 535). Here every value is what is
written between the quotes, and a line the parser cannot read stops the
program with its line number, instead of a warning and a dropped setting.

The rules, as python-dotenv parses them:

* ``KEY=value``: spaces around the value are dropped; `` #`` (a space, then
  ``#``) starts a comment, so ``a#b`` is kept whole and ``a #b`` is ``a``;
* ``KEY='value'``: everything between the single quotes, as written (no
  escapes, no ``'`` inside);
* ``KEY="value"``: ``\"`` and ``\\`` are escapes; ``#`` and spaces are kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dotenv.parser import parse_stream
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from mailer.exceptions import ConfigError

# The key of a line that did not parse, to name it (never its value).
_KEY = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=")
QUOTING_HINT = (
    'write the value in single quotes (taken as written: $, #, spaces and " '
    "included; no ' inside), or in double quotes with \\\" for a quote"
)


def read_env_file(path: Path, *, encoding: str = "utf-8") -> dict[str, str | None]:
    """Return the keys and values of a ``.env`` file, each value taken literally.

    Args:
        path: The file.
        encoding: Its encoding.

    Returns:
        Each key and its value (``None`` for a line with a key and no ``=``).

    Raises:
        ConfigError: The file cannot be read, is not in ``encoding``, or has a
            line that does not parse (the message gives the line number and
            key, never the value).
    """
    try:
        with path.open(encoding=encoding) as stream:
            bindings = list(parse_stream(stream))
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: not a {encoding} text file; save it as {encoding}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    values: dict[str, str | None] = {}
    for binding in bindings:
        if binding.error:
            match = _KEY.match(binding.original.string)
            key = f" ({match.group(1)})" if match else ""
            raise ConfigError(
                f"{path}: line {binding.original.line}{key} cannot be read; "
                + QUOTING_HINT,
                key=match.group(1).upper() if match else None,
            )
        if binding.key is not None:
            values[binding.key] = binding.value
    return values


def env_file_paths(env_file: Any) -> list[Path]:
    """Return the ``.env`` files a settings ``env_file`` value names, if they exist."""
    if env_file is None:
        return []
    listed: Iterable[Any] = (
        [env_file] if isinstance(env_file, str | os.PathLike) else env_file
    )
    paths = [Path(name).expanduser() for name in listed]
    return [path for path in paths if path.is_file()]


class LiteralDotEnvSource(PydanticBaseSettingsSource):
    """A pydantic-settings source reading ``.env`` files with ``read_env_file``.

    Args:
        settings_cls: The settings class.
        env_file: The file(s) to read, later ones winning.
        env_names: Each field's environment variable name, by field name.
        encoding: The files' encoding.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        env_file: Any,
        *,
        env_names: Mapping[str, str],
        encoding: str = "utf-8",
    ) -> None:
        super().__init__(settings_cls)
        values: dict[str, str | None] = {}
        for path in env_file_paths(env_file):
            values.update(
                {
                    key.upper(): value
                    for key, value in read_env_file(path, encoding=encoding).items()
                }
            )
        self._values = values
        self._env_names = dict(env_names)

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        """Return the raw value of one field from the file(s), if set."""
        key = self._env_names.get(field_name, field_name.upper())
        return self._values.get(key), key, False

    def __call__(self) -> dict[str, Any]:
        """Return every field set to a non-empty value (empty means the default)."""
        found: dict[str, Any] = {}
        for field_name in self._env_names:
            value, _, _ = self.get_field_value(
                self.settings_cls.model_fields[field_name], field_name
            )
            if value is not None and value != "":
                found[field_name] = value
        return found
