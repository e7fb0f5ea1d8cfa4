"""Read MailerSettings from the environment and ``.env``; errors are one line."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic import model_validator as _model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mailer.config.dsn import OPTIONS, Relay, RelayMode, TLSMode, parse_dsn
from mailer.config.envfile import LiteralDotEnvSource, env_file_paths, read_env_file
from mailer.config.rates import RateLimit, parse_rate_limit
from mailer.content.addresses import Address
from mailer.exceptions import ConfigError, MailerError

ENV_PREFIX = "MAILER_"
DEFAULT_PORTS: dict[str, int] = {
    "tls": 465,
    "starttls": 587,
    "opportunistic": 25,
    "none": 25,
}

# The separate keys that MAILER_DSN replaces: setting both is ambiguous.
_DSN_FIELDS = (
    "smtp_host",
    "smtp_port",
    "smtp_tls",
    "smtp_username",
    "smtp_password",
    "smtp_ca_file",
    "smtp_local_hostname",
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOOK_NAME = re.compile(
    r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attribute>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)"
)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HOSTNAME = re.compile(
    r"(?i)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?"
)


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class MailerSettings(BaseSettings):
    """How to reach the SMTP server and how to send; read from ``MAILER_*`` variables.

    Values come, highest priority first, from keyword arguments, the environment,
    and the ``.env`` file in the current directory (or ``_env_file=PATH``).
    ``.env`` values are taken literally: ``$`` is never expanded (see
    ``mailer.config.envfile``). Unknown ``MAILER_*`` keys are errors (a typo
    must not silently drop a setting); other keys in ``.env`` are left alone.
    Errors name the key and never echo the value.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        populate_by_name=True,
        validate_default=True,
    )

    smtp_host: str = Field("localhost", description="SMTP server host name or IP.")
    smtp_port: int | None = Field(
        None, ge=1, le=65535, description="Port; default 465 (tls), 587, or 25 (none)."
    )
    smtp_username: str | None = Field(None, description="Login name for SMTP AUTH.")
    smtp_password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    smtp_tls: TLSMode | None = Field(
        None,
        description=(
            "none, opportunistic, starttls or tls; default none on loopback, "
            "else starttls."
        ),
    )
    smtp_ca_file: Path | None = Field(None, description="PEM file of CAs to trust.")
    smtp_local_hostname: str | None = Field(None, description="Name sent in EHLO.")
    from_: str | None = Field(
        None,
        validation_alias=AliasChoices("MAILER_FROM", "from_"),
        description="Default From address.",
    )
    timeout: float = Field(
        30.0, gt=0, le=3600, allow_inf_nan=False, description="Seconds per SMTP step."
    )
    concurrency: int = Field(5, ge=1, le=100, description="Connections in parallel.")
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that render a batch: 0 = one per core, 1 = none.",
    )
    templates_dir: Path = Field(Path("templates"), description="Template sets folder.")

    # Connection pool: how long one SMTP connection is reused before a new one.
    pool_max_messages: int = Field(
        100, ge=1, le=100_000, description="Messages per connection, then QUIT."
    )
    pool_max_age: float = Field(
        300.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Seconds a connection is used for new messages, then QUIT.",
    )
    pool_max_idle: float = Field(
        10.0,
        gt=0,
        le=3_600,
        allow_inf_nan=False,
        description="Seconds a connection may sit unused before it is closed.",
    )

    # Security: TLS policy and limits (see mailer/transports/tls.py, mailer/limits.py).
    smtp_insecure_plaintext: bool = Field(
        False, description="Allow MAILER_SMTP_TLS=none to a host that is not loopback."
    )
    smtp_insecure_skip_verify: bool = Field(
        False, description="Do not verify the server's certificate (warns each time)."
    )
    smtp_tls_min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="Oldest TLS version accepted."
    )
    smtp_tls_fingerprint: str | None = Field(
        None, description="SHA-256 fingerprint(s) of the server certificate to pin."
    )
    max_recipients: int = Field(
        100, ge=1, le=100_000, description="Most recipients (to+cc+bcc) per message."
    )
    max_message_size: int = Field(
        26_214_400, ge=1024, description="Largest message, in bytes, once encoded."
    )

    # Delivery: retries, timeouts, relays and shutdown (issue 4; see mailer/retry.py).
    max_attempts: int = Field(
        5, ge=1, le=100, description="Attempts per message, the first included."
    )
    retry_backoff: float = Field(
        1.0, gt=0, le=3600, allow_inf_nan=False, description="First retry delay (s)."
    )
    retry_max_backoff: float = Field(
        60.0, gt=0, le=86400, allow_inf_nan=False, description="Longest retry delay."
    )
    send_deadline: float = Field(
        300.0, gt=0, le=604800, allow_inf_nan=False, description="Per message, all in."
    )
    connect_timeout: float = Field(
        10.0, gt=0, le=3600, allow_inf_nan=False, description="TCP connect (s)."
    )
    greeting_timeout: float = Field(
        30.0, gt=0, le=3600, allow_inf_nan=False, description="Server greeting (s)."
    )
    message_timeout: float = Field(
        300.0, gt=0, le=3600, allow_inf_nan=False, description="One transaction (s)."
    )
    dsn: SecretStr | None = Field(None, description="smtp://user:pass@host:port?...")
    relay_cooldown: float = Field(
        60.0, ge=0, le=86400, allow_inf_nan=False, description="Skip a failing relay."
    )
    shutdown_grace: float = Field(
        10.0, ge=0, le=3600, allow_inf_nan=False, description="In-flight on Ctrl-C."
    )

    # Queued sending on PostgreSQL (issue 15; see mailer/queue/).
    queue_dsn: SecretStr | None = Field(
        None, description="postgresql://user:pass@host:5432/db for the mail queue."
    )
    queue_job_size: int = Field(
        100, ge=1, le=10_000, description="Messages per job of `send --queue`."
    )
    queue_heartbeat: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds between worker heartbeats; 3 missed: stalled.",
    )

    # Production: rate limits, hooks, redirect, telemetry (issue 17; see
    # mailer/config/rates.py, mailer/transports/ratelimit.py, mailer/delivery/hooks.py).
    rate_limit: str | None = Field(
        None, description="Transactions per relay: 100/s, 600/min, 5000/h [burst=N]."
    )
    rate_cooldown: float = Field(
        60.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Seconds a rate refusal (421, 4.7.x) slows its relay.",
    )
    before_send: str | None = Field(
        None,
        description="Hooks run before each send: module:function, comma-separated.",
    )
    after_send: str | None = Field(
        None, description="Hooks told each final result: module:function, ..."
    )
    redirect_to: str | None = Field(
        None, description="Staging: send every message to this address instead."
    )
    otel: Literal["auto", "on", "off"] = Field(
        "auto", description="OpenTelemetry spans and metrics (the [otel] extra)."
    )

    # DKIM signing (issue 13; see mailer/content/dkim.py).
    dkim_domain: str | None = Field(
        None, description="Signing domain (d=); aligned with the From domain."
    )
    dkim_selector: str | None = Field(
        None, description="Selector (s=): the key is at SELECTOR._domainkey.DOMAIN."
    )
    dkim_private_key_file: Path | None = Field(
        None, description="PEM private key file (RSA >= 1024 bits, or Ed25519)."
    )
    dkim_private_key: SecretStr | None = Field(
        None, description="The PEM private key itself (a secret; \\n for newlines)."
    )

    # The DSN's relays, validated once (see _validated_relays).
    _relays: tuple[MailerSettings, ...] | None = PrivateAttr(None)
    _relay_mode: RelayMode = PrivateAttr("single")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read ``.env`` with our literal reader instead of python-dotenv's default.

        The default expands ``${VAR}``, even in single quotes, so a password
        holding ``$`` silently changed; ours reads every value as written.
        """
        # The source pydantic-settings made knows which file: .env or _env_file.
        env_file = getattr(dotenv_settings, "env_file", None)
        encoding = getattr(dotenv_settings, "env_file_encoding", None) or "utf-8"
        literal = LiteralDotEnvSource(
            settings_cls, env_file, env_names=env_names(), encoding=encoding
        )
        return init_settings, env_settings, literal, file_secret_settings

    def __init__(self, **values: Any) -> None:
        """Load and validate the settings.

        Raises:
            ConfigError: A value is bad or a ``MAILER_*`` key is unknown; the
                message names the key and never contains the value.
        """
        _check_known_keys(values)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @field_validator(
        "smtp_host", "smtp_username", "smtp_local_hostname", "from_", mode="after"
    )
    @classmethod
    def _no_controls(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("control characters are not allowed")
        return value

    @field_validator("smtp_password", mode="after")
    @classmethod
    def _password_is_clean(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _CONTROL.search(value.get_secret_value()):
            # A CRLF-edited .env leaves an invisible "\r" at the end.
            raise ValueError("control characters are not allowed (a CRLF .env file?)")
        return value

    @field_validator("smtp_host", "smtp_local_hostname", mode="after")
    @classmethod
    def _is_host_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if ":" in value:
                raise ValueError(
                    "a host name only; put the port in MAILER_SMTP_PORT"
                ) from None
            if not _HOSTNAME.fullmatch(value):
                raise ValueError("not a valid host name") from None
        return value

    @field_validator("from_", mode="after")
    @classmethod
    def _is_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Address.parse(value, field="MAILER_FROM")
            except MailerError as exc:
                raise ValueError(str(exc).removeprefix("MAILER_FROM: ")) from None
        return value

    @field_validator("smtp_ca_file", mode="after")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("rate_limit", mode="after")
    @classmethod
    def _is_rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate_limit(value)  # a ValueError names the expected form
        return value

    @field_validator("before_send", "after_send", mode="after")
    @classmethod
    def _are_hook_names(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hook_names(value)
        return value

    @field_validator("redirect_to", mode="after")
    @classmethod
    def _is_redirect_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Address.parse(value, field="MAILER_REDIRECT_TO")
            except MailerError as exc:
                raise ValueError(
                    str(exc).removeprefix("MAILER_REDIRECT_TO: ")
                ) from None
        return value

    @field_validator("dsn", mode="after")
    @classmethod
    def _dsn_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_dsn(value.get_secret_value())  # DSNError is a ValueError
        return value

    @field_validator("queue_dsn", mode="after")
    @classmethod
    def _queue_dsn_is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            if not text.startswith(("postgresql://", "postgres://")):
                raise ValueError("expected a postgresql://user:pass@host:port/db URL")
            if _CONTROL.search(text):
                raise ValueError("control characters are not allowed")
        return value

    @_model_validator(mode="after")
    def _consistent(self) -> MailerSettings:
        if self.retry_max_backoff < self.retry_backoff:
            raise ValueError(
                f"{ENV_PREFIX}RETRY_MAX_BACKOFF: must not be less than "
                f"{ENV_PREFIX}RETRY_BACKOFF"
            )
        if self.dsn is not None:
            both = sorted(self.model_fields_set & set(_DSN_FIELDS))
            if both:
                raise ValueError(
                    f"{ENV_PREFIX}DSN: set either it or {env_names()[both[0]]}, "
                    "not both"
                )
            self._relays = self._validated_relays()
        if (self.smtp_username is None) != (self.smtp_password is None):
            missing = "PASSWORD" if self.smtp_password is None else "USERNAME"
            raise ValueError(
                f"{ENV_PREFIX}SMTP_{missing}: required when the other login "
                "setting is set"
            )
        if (
            self.smtp_password is not None
            and self.tls_mode == "none"
            and not is_loopback(self.smtp_host)
        ):
            raise ValueError(
                f"{ENV_PREFIX}SMTP_TLS: "
                + _CLEAR_LOGIN.format(tls="'none'", host=self.smtp_host, fix="tls")
            )
        return self

    @field_validator("dkim_domain", mode="after")
    @classmethod
    def _dkim_domain_is_host(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME.fullmatch(value):
            raise ValueError("not a domain name")
        return value

    @field_validator("dkim_selector", mode="after")
    @classmethod
    def _dkim_selector_is_label(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME.fullmatch(value):
            raise ValueError("letters, digits, '-' and '.' only (a DNS name part)")
        return value

    @_model_validator(mode="after")
    def _dkim_consistent(self) -> MailerSettings:
        given = [
            name
            for name in (
                "dkim_domain",
                "dkim_selector",
                "dkim_private_key_file",
                "dkim_private_key",
            )
            if getattr(self, name) is not None
        ]
        if not given:
            return self
        if self.dkim_private_key is not None and self.dkim_private_key_file is not None:
            raise ValueError(
                f"{ENV_PREFIX}DKIM_PRIVATE_KEY: set either it or "
                f"{ENV_PREFIX}DKIM_PRIVATE_KEY_FILE, not both"
            )
        for name in ("dkim_domain", "dkim_selector"):
            if getattr(self, name) is None:
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()}: required when "
                    f"{ENV_PREFIX}{given[0].upper()} is set (DKIM signing)"
                )
        if self.dkim_private_key is None and self.dkim_private_key_file is None:
            raise ValueError(
                f"{ENV_PREFIX}DKIM_PRIVATE_KEY_FILE: required with "
                f"{ENV_PREFIX}DKIM_DOMAIN (or set {ENV_PREFIX}DKIM_PRIVATE_KEY)"
            )
        from mailer.config.signing import check_alignment, dkim_signer

        signer = dkim_signer(self)  # the key is read and checked at start-up
        sender = self.default_sender
        if signer is not None and sender is not None:
            check_alignment(signer, sender, field=f"{ENV_PREFIX}FROM")
        return self

    @field_validator("smtp_tls_fingerprint", mode="after")
    @classmethod
    def _is_fingerprint_list(cls, value: str | None) -> str | None:
        if value is not None:
            parse_fingerprints(value)
        return value

    @_model_validator(mode="after")
    def _tls_is_safe(self) -> MailerSettings:
        remote = not is_loopback(self.smtp_host)
        if self.tls_mode == "none" and remote and not self.smtp_insecure_plaintext:
            raise ValueError(
                f"{ENV_PREFIX}SMTP_TLS: "
                + _CLEAR_MAIL.format(tls="'none'", host=self.smtp_host, fix="tls")
            )
        if self.tls_mode == "none" and self.smtp_tls_fingerprint is not None:
            raise ValueError(
                f"{ENV_PREFIX}SMTP_TLS_FINGERPRINT: a pinned certificate needs TLS, "
                "but MAILER_SMTP_TLS is none"
            )
        return self

    @property
    def tls_fingerprints(self) -> frozenset[str]:
        """Return the pinned SHA-256 fingerprints, as lower-case hex without colons."""
        if self.smtp_tls_fingerprint is None:
            return frozenset()
        return parse_fingerprints(self.smtp_tls_fingerprint)

    @property
    def tls_mode(self) -> TLSMode:
        """Return the TLS mode set, else none on loopback and starttls elsewhere."""
        if self.smtp_tls is not None:
            return self.smtp_tls
        return "none" if is_loopback(self.smtp_host) else "starttls"

    @property
    def port(self) -> int:
        """Return the port: the one set, or the usual one for the TLS mode."""
        return self.smtp_port or DEFAULT_PORTS[self.tls_mode]

    def _validated_relays(self) -> tuple[MailerSettings, ...]:
        """Return one settings object per relay of the DSN, each validated.

        A relay's values pass through this model's own validators, so a host,
        a timeout or a CA file in the DSN obeys the same rules as the
        ``MAILER_SMTP_*`` keys; errors name the relay and the DSN option.
        """
        assert self.dsn is not None  # noqa: S101 - checked by the caller
        listed = parse_dsn(self.dsn.get_secret_value())
        base = self.model_dump(exclude={"dsn"})
        relays = []
        for number, relay in enumerate(listed.relays, 1):
            values = {**base, **relay.overrides(), "dsn": None}
            try:
                relays.append(MailerSettings(_env_file=None, **values))
            except ConfigError as exc:
                raise ValueError(_relay_error(number, relay, exc)) from None
        self._relay_mode = listed.mode
        return tuple(relays)

    @property
    def relays(self) -> tuple[MailerSettings, ...]:
        """Return one settings object per SMTP relay (just this one without a DSN).

        With ``MAILER_DSN=console://`` there is no relay: nothing is sent.
        """
        return self._relays if self._relays is not None else (self,)

    @property
    def relay_mode(self) -> RelayMode:
        """Return how relays are chosen: single, failover or roundrobin."""
        return self._relay_mode

    @property
    def rate(self) -> RateLimit | None:
        """Return ``MAILER_RATE_LIMIT`` (or the relay's ``?rate=``), parsed."""
        return None if self.rate_limit is None else parse_rate_limit(self.rate_limit)

    @property
    def redirect_address(self) -> Address | None:
        """Return ``MAILER_REDIRECT_TO`` as an Address, if it is set."""
        if self.redirect_to is None:
            return None
        return Address.parse(self.redirect_to, field="MAILER_REDIRECT_TO")

    @property
    def default_sender(self) -> Address | None:
        """Return ``MAILER_FROM`` as an Address, if it is set."""
        if self.from_ is None:
            return None
        return Address.parse(self.from_, field="MAILER_FROM")


def parse_hook_names(value: str) -> tuple[tuple[str, str], ...]:
    """Split ``pkg.module:function, other:hook`` into (module, attribute) pairs.

    Raises:
        ValueError: An entry is not ``module:function`` (dotted names).
    """
    names = []
    for entry in value.split(","):
        match = _HOOK_NAME.fullmatch(entry.strip())
        if match is None:
            raise ValueError(
                "expected module:function entries (importable dotted names), "
                "comma-separated"
            )
        names.append((match["module"], match["attribute"]))
    return tuple(names)


def parse_fingerprints(value: str) -> frozenset[str]:
    """Parse comma-separated SHA-256 fingerprints (hex, colons and case ignored).

    Several values let a pin survive a certificate rotation: list the old and
    the new certificate until the switch is done.

    Raises:
        ValueError: An entry is not 64 hexadecimal digits.
    """
    fingerprints = set()
    for entry in value.split(","):
        digits = entry.strip().lower().removeprefix("sha256:").replace(":", "")
        if not _SHA256_HEX.fullmatch(digits):
            raise ValueError(
                "expected SHA-256 fingerprints: 64 hex digits each, comma-separated"
            )
        fingerprints.add(digits)
    return frozenset(fingerprints)


def env_names() -> dict[str, str]:
    """Return each setting's environment variable name, keyed by field name."""
    names = {}
    for name, info in MailerSettings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            names[name] = alias.choices[0]
        else:
            names[name] = f"{ENV_PREFIX}{name.upper()}"
    return names


def _check_known_keys(values: dict[str, Any]) -> None:
    known = env_names()
    unknown_kwargs = [
        key
        for key in values
        if not key.startswith("_") and key not in known and key not in known.values()
    ]
    if unknown_kwargs:
        key = unknown_kwargs[0]
        raise ConfigError(f"{key}: unknown setting{_suggest(key, known)}", key=key)
    env_file = values.get("_env_file", MailerSettings.model_config.get("env_file"))
    keys = [k for k in os.environ if k.upper().startswith(ENV_PREFIX)]
    for path in env_file_paths(env_file):
        keys += [k for k in read_env_file(path) if k.upper().startswith(ENV_PREFIX)]
    allowed = set(known.values())
    for key in keys:
        if key.upper() not in allowed:
            raise ConfigError(
                f"{key.upper()}: unknown setting{_suggest(key.upper(), known)}",
                key=key.upper(),
            )


_DSN_OPTION = {field: option for option, field in OPTIONS.items()} | {
    "smtp_host": "the host part",
    "smtp_port": "the port part",
    "smtp_username": "the user name (in the user-info part)",
    "smtp_password": "the password (in the user-info part)",
}
# The plain-text rules, worded for MAILER_SMTP_TLS or for a relay of MAILER_DSN.
_CLEAR_MAIL = (
    "{tls} would send mail in clear to {host}; use starttls or {fix}, or set "
    f"{ENV_PREFIX}SMTP_INSECURE_PLAINTEXT=true if you really mean it"
)
_CLEAR_LOGIN = "{tls} would send the password in clear to {host}; use starttls or {fix}"
# pydantic's words for a bound, said as the DSN's other errors say them.
_BOUNDS = (
    ("Input should be greater than or equal to ", "must be at least "),
    ("Input should be greater than ", "must be more than "),
    ("Input should be less than or equal to ", "must be at most "),
    ("Input should be less than ", "must be less than "),
)


def _relay_error(number: int, relay: Relay, exc: ConfigError) -> str:
    """Return the one-line error for a relay whose values do not validate."""
    where = f"{ENV_PREFIX}DSN: relay {number}: "
    if exc.key == f"{ENV_PREFIX}SMTP_TLS":
        # A plain-text rule: say it in the DSN's own terms.
        rule = _CLEAR_LOGIN if relay.password is not None else _CLEAR_MAIL
        return where + rule.format(tls="tls=none", host=relay.host, fix="smtps://")
    names = {key: field for field, key in env_names().items()}
    option = _DSN_OPTION.get(names.get(exc.key or "", ""), exc.key)
    reason = str(exc).removeprefix(f"{exc.key}: ")
    for pydantic_words, ours in _BOUNDS:
        if reason.startswith(pydantic_words):
            return where + f"{option} {ours}{reason.removeprefix(pydantic_words)}"
    return where + f"{option}: {reason}"


def _suggest(key: str, known: dict[str, str]) -> str:
    candidates = [*known.values(), *known]
    close = difflib.get_close_matches(key, candidates, n=1)
    if not close:
        return ""
    match = close[0]
    env_name = known.get(match, match)
    return f" (did you mean {env_name}?)"


def _config_error(exc: ValidationError) -> ConfigError:
    names = env_names()
    error = exc.errors(include_input=False, include_url=False)[0]
    location = error["loc"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if location:
        field = str(location[0])
        key = names.get(field, field.upper())
        return ConfigError(f"{key}: {message}", key=key)
    key_match = re.match(rf"({ENV_PREFIX}[A-Z_]+): ", message)
    return ConfigError(message, key=key_match.group(1) if key_match else None)
