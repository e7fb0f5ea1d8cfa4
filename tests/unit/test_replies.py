"""Reply classification for the SMTP session: refusals, final replies, HELO, 530."""

from __future__ import annotations

import pytest

from mailer.exceptions import AuthenticationError, TLSError
from mailer.replies import (
    Misconfiguration,
    Reply,
    calls_for_helo,
    is_refusal,
    misconfiguration,
    requires_login,
    requires_starttls,
    settles_content,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (250, False),
        (354, False),
        (-1, False),
        (421, False),
        (450, True),
        (503, True),
        (550, True),
        (554, True),
        (600, False),
    ],
)
def test_a_refusal_is_a_4xx_or_5xx_other_than_421(code: int, expected: bool) -> None:
    """4xx/5xx keep the session in step; 421 ends it; other codes are out of step."""
    assert is_refusal(Reply(code, "text")) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (250, True),
        (421, True),
        (451, True),
        (554, True),
        (-1, False),
        (354, False),
        (251, False),
        (999, False),
    ],
)
def test_only_250_4xx_and_5xx_settle_a_message(code: int, expected: bool) -> None:
    """A malformed or out-of-step reply to the content leaves delivery unknown."""
    assert settles_content(Reply(code, "text")) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [(500, True), (502, True), (550, True), (421, False), (451, False)],
)
def test_helo_follows_a_5xx_to_ehlo_only(code: int, expected: bool) -> None:
    """500/502 (and other 5xx) to EHLO mean "no extensions here"; a 4xx does not."""
    assert calls_for_helo(Reply(code, "5.5.2 Command not recognized")) is expected


def test_a_530_says_whether_starttls_or_a_login_is_missing() -> None:
    """530 asking for STARTTLS (RFC 3207) is told from 530 asking for AUTH (RFC 4954)."""
    starttls = Reply(530, "5.7.0 Must issue a STARTTLS command first")
    login = Reply(530, "5.7.0 Authentication required")
    other = Reply(550, "5.7.0 Must issue a STARTTLS command first")
    assert (requires_starttls(starttls), requires_login(starttls)) == (True, False)
    assert (requires_starttls(login), requires_login(login)) == (False, True)
    assert (requires_starttls(other), requires_login(other)) == (False, False)


def test_a_530_names_what_is_missing_whatever_error_carries_it() -> None:
    """The transport raises 530 as TLSError/AuthenticationError; the verdict reads the reply."""
    starttls = Reply(530, "5.7.0 Must issue a STARTTLS command first")
    login = Reply(530, "5.7.0 Authentication required")
    assert misconfiguration(TLSError("x", reply=starttls)) is (
        Misconfiguration.STARTTLS_REQUIRED
    )
    assert misconfiguration(AuthenticationError("x", reply=login)) is (
        Misconfiguration.LOGIN_REQUIRED
    )
    assert misconfiguration(TLSError("no STARTTLS offered")) is (
        Misconfiguration.NO_STARTTLS
    )
