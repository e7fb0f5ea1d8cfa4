"""MAILER_DSN: one relay or a list, options, and errors that never show the secret."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from mailer import ConfigError, MailerSettings
from mailer.config.dsn import DSNError, parse_dsn
from mailer.transports import SMTPTransport
from mailer.transports.factory import transport_from_settings
from mailer.transports.failover import FailoverTransport

SECRET = "s3cr%40t-pass"  # percent-encoded "s3cr@t-pass"


def test_the_issue_example_sets_host_port_tls_login_and_timeout(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """smtp://user:pass@host:587?tls=starttls&timeout=10 fills the SMTP settings."""
    [relay] = make_settings(
        dsn=f"smtp://shop%40example.com:{SECRET}@smtp.example.com:587"
        "?tls=starttls&timeout=10"
    ).relays
    assert (relay.smtp_host, relay.port, relay.tls_mode) == (
        "smtp.example.com",
        587,
        "starttls",
    )
    assert relay.smtp_username == "shop@example.com"
    assert relay.smtp_password is not None
    assert relay.smtp_password.get_secret_value() == "s3cr@t-pass"
    assert relay.timeout == 10


def test_smtps_is_implicit_tls_on_465_by_default(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """smtps:// means tls; the port defaults as for MAILER_SMTP_TLS=tls."""
    [relay] = make_settings(dsn="smtps://mx.example.com").relays
    assert (relay.tls_mode, relay.port) == ("tls", 465)


def test_other_settings_are_kept_for_each_relay(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """The relay overrides the SMTP keys only; MAILER_FROM, retries stay."""
    [relay] = make_settings(
        dsn="smtp://127.0.0.1:2525", from_="a@example.test", max_attempts=3
    ).relays
    assert relay.from_ == "a@example.test"
    assert relay.max_attempts == 3
    assert relay.tls_mode == "none"  # loopback default, as without a DSN
    assert relay.dsn is None


def test_failover_and_roundrobin_list_relays_in_order() -> None:
    """failover(a b) and roundrobin(a b): the relays, in the order given."""
    listed = parse_dsn("failover(smtp://a.example.com smtps://b.example.com:2465)")
    assert listed.mode == "failover"
    assert [r.name for r in listed.relays] == ["a.example.com", "b.example.com:2465"]
    assert parse_dsn("roundrobin( smtp://a.example.com  smtp://[::1]:25 )").mode == (
        "roundrobin"
    )
    assert parse_dsn("smtp://[::1]:25").relays[0].name == "[::1]:25"


def test_the_dsn_is_hidden_in_the_settings_repr(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_DSN holds the password: repr and str show stars."""
    value = make_settings(dsn=f"smtp://u:{SECRET}@smtp.example.com")
    assert "s3cr" not in repr(value)
    assert "s3cr" not in str(value.relays)


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        (f"http://u:{SECRET}@h.example.com", "relay 1: the scheme must be smtp://"),
        (f"smtp://u:{SECRET}@h.example.com:99999", "the port part is not a number"),
        (f"smtp://u:{SECRET}@h.example.com?tiemout=3", "unknown option 'tiemout'"),
        (f"smtp://u:{SECRET}@h.example.com?tls=maybe", "tls must be one of none, opp"),
        (f"smtp://u:{SECRET}@h.example.com?timeout=0", "timeout must be more than 0"),
        (f"smtp://u:{SECRET}@h.example.com?tls=none", "password in clear"),
        (f"smtps://u:{SECRET}@h.example.com?tls=starttls", "contradicts it"),
        (f"smtp://u:{SECRET}@bad_host.example.com", "the host part: not a valid host"),
        ("smtp://u@h.example.com", "needs both a user name and a password"),
        (f"smtp://u:{SECRET}@h.example.com/path", "a path or #fragment is not allowed"),
        ("failover()", "failover() lists no relay"),
        (f"smtp://u:{SECRET}@h.example.com?ca_file=/no/ca.pem", "ca_file: no such"),
    ],
)
def test_a_bad_dsn_is_one_line_naming_the_key_without_the_password(
    dsn: str, message: str, make_settings: Callable[..., MailerSettings]
) -> None:
    """Each mistake is named; the password never appears in the error."""
    with pytest.raises(ConfigError) as caught:
        make_settings(dsn=f"failover({dsn})" if dsn != "failover()" else dsn)
    text = str(caught.value)
    assert text.startswith("MAILER_DSN: ")
    assert message in text
    assert "s3cr" not in text
    assert "\n" not in text
    assert caught.value.key == "MAILER_DSN"


def test_a_dsn_with_separate_smtp_keys_is_refused(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """MAILER_DSN and MAILER_SMTP_HOST together: which one wins would be a guess."""
    with pytest.raises(
        ConfigError, match="MAILER_DSN: set either it or MAILER_SMTP_HOST"
    ):
        make_settings(dsn="smtp://a.example.com", smtp_host="b.example.com")


def test_the_dsn_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILER_DSN works like every other key."""
    monkeypatch.setenv("MAILER_DSN", "smtps://u:p@mx.example.com")
    assert MailerSettings().relays[0].smtp_host == "mx.example.com"


def test_parse_errors_are_value_errors() -> None:
    """DSNError is a ValueError, so pydantic reports it as the key's error."""
    with pytest.raises(DSNError):
        parse_dsn("smtp://")
    assert issubclass(DSNError, ValueError)


def test_one_relay_builds_an_smtp_transport_and_a_list_a_failover_one(
    tmp_path: Path, make_settings: Callable[..., MailerSettings]
) -> None:
    """The factory follows the DSN: SMTPTransport, or FailoverTransport over several."""
    assert isinstance(
        transport_from_settings(make_settings(dsn="smtp://a.example.com")),
        SMTPTransport,
    )
    transport = transport_from_settings(
        make_settings(
            dsn="roundrobin(smtp://a.example.com smtps://b.example.com)",
            relay_cooldown=5,
        )
    )
    assert isinstance(transport, FailoverTransport)
    assert transport.mode == "roundrobin"
    assert transport.cooldown == 5
    assert [name for name, _ in transport.relays] == [
        "a.example.com:587",
        "b.example.com:465",
    ]


def test_a_plain_text_relay_off_loopback_needs_the_insecure_switch(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """tls=none to a remote relay: refused, as MAILER_SMTP_TLS=none is."""
    with pytest.raises(ConfigError, match="relay 2: tls=none would send mail in clear"):
        make_settings(
            dsn="failover(smtp://a.example.com smtp://b.example.com?tls=none)"
        )
    allowed = make_settings(
        dsn="smtp://b.example.com?tls=none", smtp_insecure_plaintext=True
    )
    assert allowed.relays[0].tls_mode == "none"


# Passwords written without percent-encoding, each holding a character that
# ends the user-info part of a URL. Their pieces must never reach the message.
UNENCODED_PASSWORDS = [
    "P@ssW0rd!/2024",  # the issue's example: once 'not a valid host name: ssw0rd!'
    "123?abc=1",  # once "unknown option 'abc'"
    "Kv#Zzq",
    "Qx/Wv@Rk",
    "Jj[Kq]Xy",
]


def _pieces(password: str) -> list[str]:
    """Return the runs of letters and digits of a password (2+ characters)."""
    return [piece for piece in re.split(r"[^A-Za-z0-9]+", password) if len(piece) > 1]


@pytest.mark.parametrize("password", UNENCODED_PASSWORDS)
@pytest.mark.parametrize("listed", [False, True])
def test_an_unencoded_password_is_refused_without_any_piece_of_it(
    password: str, listed: bool, make_settings: Callable[..., MailerSettings]
) -> None:
    """A / ? # @ [ ] in the password: the user-info part is named, percent-encoding explained, nothing quoted."""
    dsn = f"smtp://user:{password}@smtp.example.com:587?tls=starttls"
    with pytest.raises(ConfigError) as caught:
        make_settings(dsn=f"failover({dsn})" if listed else dsn)
    text = str(caught.value)
    where = "relay 1: " if listed else ""
    assert text.startswith(f"MAILER_DSN: {where}the user-info part")
    assert "percent-encode" in text
    assert "@ as %40" in text
    assert "/ as %2F" in text
    for piece in _pieces(password):
        assert piece.lower() not in text.lower(), piece
    assert "\n" not in text


@pytest.mark.parametrize("password", UNENCODED_PASSWORDS)
def test_the_same_password_percent_encoded_is_read_back_exactly(
    password: str, make_settings: Callable[..., MailerSettings]
) -> None:
    """quote(password, safe='') is the way to write it, and it round-trips."""
    [relay] = make_settings(
        dsn=f"smtp://user:{quote(password, safe='')}@smtp.example.com:587"
    ).relays
    assert relay.smtp_password is not None
    assert relay.smtp_password.get_secret_value() == password
    assert (relay.smtp_host, relay.port) == ("smtp.example.com", 587)


def test_other_errors_never_quote_the_user_info(
    make_settings: Callable[..., MailerSettings],
) -> None:
    """A bad host or option after a well-formed user-info part names the part, not the password."""
    for dsn, part in [
        ("smtp://user:Zq9w-secret@bad_host.example.com", "the host part"),
        ("smtp://user:Zq9w-secret@h.example.com:0", "the port part"),
        ("smtp://user:Zq9w-secret@h.example.com?tiemout=3", "the query part"),
        ("smtp://user:Zq9w-secret@", "the host part is missing"),
    ]:
        with pytest.raises(ConfigError) as caught:
            make_settings(dsn=dsn)
        assert part in str(caught.value)
        assert "zq9w" not in str(caught.value).lower()
        assert "secret" not in str(caught.value).lower()
