"""Build MailerSettings for tests from keywords only: no environment, no .env."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from mailer.config.settings import MailerSettings, env_names
from mailer.config.settings import _config_error as config_error
from mailer.exceptions import ConfigError
from mailer.testing.matchers import suggest

TEST_SENDER = "sender@example.test"
"""The sender every double uses unless the test sets one (the kit's MAILER_FROM)."""


def isolated_settings(**values: Any) -> MailerSettings:
    """Return settings made from ``values`` alone, validated as usual.

    ``MailerSettings()`` reads ``MAILER_*`` variables and ``.env`` for every
    field not given, so a developer's own configuration could leak into a test.
    This reads neither: a field not given keeps its default.

    Args:
        values: Settings by field name (``smtp_host=...``, ``from_=...``).

    Raises:
        ConfigError: An unknown field (with a suggestion) or an invalid value,
            in one line naming the ``MAILER_*`` key.
    """
    names = env_names()
    for key in values:
        if key not in names:
            raise ConfigError(f"{key}: unknown setting{suggest(key, names)}", key=key)
    settings = MailerSettings.__new__(MailerSettings)
    try:
        # MailerSettings.__init__ (and model_validate, which calls it) reads the
        # environment and .env; pydantic's own BaseModel.__init__ validates the
        # given values, defaults and validators included, and reads nothing.
        BaseModel.__init__(settings, **values)
    except ValidationError as exc:
        raise config_error(exc) from None
    return settings
