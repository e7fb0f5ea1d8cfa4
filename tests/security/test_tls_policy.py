"""TLS policy against real servers: refusals happen before AUTH and before any message byte."""

from __future__ import annotations

import hashlib
import logging
import ssl

import pytest
import trustme

from mailer import Message, MessageClient, TLSError
from mailer.config.settings import MailerSettings

pytestmark = pytest.mark.integration

PASSWORD = "tls-policy-secret-9"
LOGIN = {"smtp_username": "shop", "smtp_password": PASSWORD}
MESSAGE = Message(to="ann@example.test", subject="s", body="b")


async def send_expecting_tls_error(settings: MailerSettings) -> TLSError:
    async with MessageClient(settings) as client:
        with pytest.raises(TLSError) as caught:
            await client.send(MESSAGE)
    assert "\n" not in str(caught.value)
    return caught.value


async def test_required_starttls_not_offered_is_refused_before_auth_and_mail(
    watched_server,
) -> None:
    """A server without TLS, credentials configured: EHLO only, then a refusal."""
    async with watched_server() as server:
        error = await send_expecting_tls_error(
            server.settings(smtp_tls="starttls", **LOGIN)
        )
    assert "does not offer STARTTLS" in str(error)
    assert "nothing was sent" in str(error)
    assert server.commands == ["EHLO", "QUIT"]  # QUIT: RFC 5321 4.1.1.10
    server.outbox.assert_nothing_sent()


async def test_an_ehlo_that_hides_starttls_is_refused_though_auth_is_offered(
    watched_server,
) -> None:
    """Downgrade: STARTTLS stripped from EHLO, AUTH offered in clear: nothing but EHLO."""
    async with watched_server(
        tls="starttls", auth={"shop": PASSWORD}, auth_in_clear=True
    ) as server:
        server.faults.hide_extensions("STARTTLS")
        error = await send_expecting_tls_error(
            server.settings(smtp_tls="starttls", **LOGIN)
        )
    assert "does not offer STARTTLS" in str(error)
    assert any(
        "AUTH" in line for line in server.transcripts[0] if line.startswith("S: 250")
    )
    assert server.commands == ["EHLO", "QUIT"]  # QUIT: RFC 5321 4.1.1.10


async def test_opportunistic_never_sends_a_password_in_clear_to_a_remote_host(
    watched_server, remote_host
) -> None:
    """Opportunistic mode, STARTTLS hidden, AUTH offered in clear: refused before AUTH."""
    async with watched_server(
        tls="starttls", auth={"shop": PASSWORD}, auth_in_clear=True
    ) as server:
        server.faults.hide_extensions("STARTTLS")
        error = await send_expecting_tls_error(
            server.settings(smtp_tls="opportunistic", **LOGIN)
        )
    assert "never sent in clear" in str(error)
    assert server.commands == ["EHLO", "QUIT"]  # QUIT: RFC 5321 4.1.1.10


async def test_opportunistic_without_starttls_sends_in_clear_with_a_warning(
    watched_server, caplog: pytest.LogCaptureFixture
) -> None:
    """Opportunistic mode, no STARTTLS and no password: sent, and the user is warned."""
    caplog.set_level(logging.WARNING, logger="mailer")
    async with (
        watched_server() as server,
        MessageClient(server.settings(smtp_tls="opportunistic")) as client,
    ):
        await client.send(MESSAGE)
    assert server.outbox.one().session.tls == "none"
    assert any(
        "does not offer STARTTLS: sending in clear" in r.getMessage()
        for r in caplog.records
    )


async def test_opportunistic_upgrades_when_starttls_is_offered(watched_server) -> None:
    """Opportunistic mode with STARTTLS offered: the login and the mail go over TLS."""
    async with (
        watched_server(tls="starttls", auth={"shop": PASSWORD}) as server,
        MessageClient(server.settings(smtp_tls="opportunistic", **LOGIN)) as client,
    ):
        result = await client.send(MESSAGE)
    assert result.is_sent
    session = server.outbox.one().session
    assert (session.tls, session.auth_username) == ("starttls", "shop")
    assert server.commands[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]


async def test_opportunistic_still_verifies_the_certificate(
    watched_server, server_context
) -> None:
    """Opportunistic is no excuse for a bad certificate: refused, nothing sent."""
    async with watched_server(
        tls="starttls", context=server_context(self_signed=True)
    ) as server:
        error = await send_expecting_tls_error(
            server.settings(smtp_tls="opportunistic")
        )
    assert "self-signed" in str(error)
    assert "MAIL" not in server.commands


@pytest.mark.parametrize("mode", ["starttls", "tls"])
@pytest.mark.parametrize(
    ("certificate", "connect_to", "says"),
    [
        ({"self_signed": True}, "127.0.0.1", "the certificate is self-signed"),
        ({"expired": True}, "127.0.0.1", "the certificate has expired"),
        (
            {"names": ("mail.example.test",)},
            "127.0.0.1",
            "the certificate is for another address (wrong host)",
        ),
        (
            {"names": ("mail.example.test",)},
            "localhost",
            "the certificate is for another host (wrong host)",
        ),
        (
            {"issuer": "other"},
            "127.0.0.1",
            "the certificate's issuer is not a trusted authority",
        ),
    ],
    ids=["self-signed", "expired", "wrong-ip", "wrong-host", "unknown-issuer"],
)
async def test_a_bad_certificate_is_refused_saying_which_check_failed(
    watched_server,
    server_context,
    mode: str,
    certificate: dict[str, object],
    connect_to: str,
    says: str,
) -> None:
    """Self-signed, expired, wrong host, unknown issuer: each named, before AUTH and MAIL."""
    options = dict(certificate)
    if options.pop("issuer", None) == "other":
        options["issuer"] = trustme.CA()
    names = options.pop("names", ())
    context = server_context(*names, **options)
    async with watched_server(
        tls=mode, context=context, auth={"shop": PASSWORD}, auth_in_clear=True
    ) as server:
        error = await send_expecting_tls_error(
            server.settings(smtp_host=connect_to, smtp_tls=mode, **LOGIN)
        )
    assert str(error).startswith(f"TLS with {connect_to}:{server.port} failed: ")
    assert says in str(error)
    assert "AUTH" not in server.commands
    assert "MAIL" not in server.commands
    server.outbox.assert_nothing_sent()


async def test_skipping_verification_needs_its_setting_and_warns_on_every_connection(
    watched_server, server_context, caplog: pytest.LogCaptureFixture
) -> None:
    """MAILER_SMTP_INSECURE_SKIP_VERIFY: a self-signed server is used, with a warning each time."""
    caplog.set_level(logging.WARNING, logger="mailer")
    async with watched_server(
        tls="starttls", context=server_context(self_signed=True)
    ) as server:
        settings = server.settings(smtp_tls="starttls", smtp_insecure_skip_verify=True)
        for _ in range(2):
            async with MessageClient(settings) as client:
                await client.send(MESSAGE)
    warnings = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert [mail.session.tls for mail in server.outbox] == ["starttls", "starttls"]


def sha256_of(context_cert: trustme.LeafCert) -> str:
    der = ssl.PEM_cert_to_DER_cert(context_cert.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).hexdigest()


async def test_a_pinned_fingerprint_that_matches_is_accepted(
    watched_server, ca: trustme.CA
) -> None:
    """The right SHA-256 pin (with colons, upper case) lets the mail through."""
    leaf = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    digest = sha256_of(leaf).upper()
    pin = ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    async with (
        watched_server(tls="tls", context=context) as server,
        MessageClient(
            server.settings(smtp_tls="tls", smtp_tls_fingerprint=pin)
        ) as client,
    ):
        result = await client.send(MESSAGE)
    assert result.is_sent


async def test_a_pinned_fingerprint_that_does_not_match_is_refused(
    watched_server, ca: trustme.CA
) -> None:
    """A valid certificate with another fingerprint: refused before AUTH, the seen one shown."""
    leaf = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    async with watched_server(
        tls="starttls", context=context, auth={"shop": PASSWORD}
    ) as server:
        error = await send_expecting_tls_error(
            server.settings(
                smtp_tls="starttls", smtp_tls_fingerprint="ab" * 32, **LOGIN
            )
        )
    seen = sha256_of(leaf).upper()
    assert "does not match MAILER_SMTP_TLS_FINGERPRINT" in str(error)
    assert seen[:2] + ":" + seen[2:4] in str(error)
    # Refused right after the handshake: not even the second EHLO went out.
    assert server.commands == ["EHLO", "STARTTLS"]


async def test_a_pin_can_stand_in_for_a_self_signed_certificate(
    watched_server, tmp_path
) -> None:
    """Skip-verify plus a pin: the self-signed server is used only while its pin matches."""
    own = trustme.CA()
    own.cert_pem.write_to_path(str(tmp_path / "cert.pem"))
    own.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    der = ssl.PEM_cert_to_DER_cert(own.cert_pem.bytes().decode())
    async with watched_server(tls="tls", context=context) as server:
        pinned = server.settings(
            smtp_tls="tls",
            smtp_insecure_skip_verify=True,
            smtp_tls_fingerprint=hashlib.sha256(der).hexdigest(),
        )
        async with MessageClient(pinned) as client:
            assert (await client.send(MESSAGE)).is_sent
        wrong = server.settings(
            smtp_tls="tls",
            smtp_insecure_skip_verify=True,
            smtp_tls_fingerprint="0" * 64,
        )
        await send_expecting_tls_error(wrong)
    assert len(server.outbox) == 1


async def test_the_minimum_tls_version_is_enforced(
    watched_server, server_context
) -> None:
    """A TLS 1.2-only server: fine by default, refused with MIN_VERSION=1.3 and the key named."""
    context = server_context(max_version=ssl.TLSVersion.TLSv1_2)
    async with (
        watched_server(tls="starttls", context=context) as server,
        MessageClient(server.settings(smtp_tls="starttls")) as client,
    ):
        assert (await client.send(MESSAGE)).is_sent
        error = await send_expecting_tls_error(
            server.settings(smtp_tls="starttls", smtp_tls_min_version="1.3")
        )
    assert "MAILER_SMTP_TLS_MIN_VERSION" in str(error)
    assert server.commands.count("MAIL") == 1


async def test_a_ca_file_replaces_the_system_store(
    watched_server, server_context, tmp_path
) -> None:
    """With MAILER_SMTP_CA_FILE set, a certificate from another CA is refused."""
    other = trustme.CA()
    other_file = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_file))
    async with watched_server(tls="tls", context=server_context()) as server:
        error = await send_expecting_tls_error(
            server.settings(smtp_tls="tls", smtp_ca_file=other_file)
        )
    assert "issuer is not a trusted authority" in str(error)


async def test_plain_loopback_with_credentials_is_allowed(watched_server) -> None:
    """On loopback the password may go without TLS (it never leaves the machine)."""
    async with (
        watched_server(
            tls="starttls", auth={"shop": PASSWORD}, auth_in_clear=True
        ) as server,
        MessageClient(server.settings(smtp_tls="none", **LOGIN)) as client,
    ):
        assert (await client.send(MESSAGE)).is_sent
    assert server.commands[:2] == ["EHLO", "AUTH"]
    assert server.outbox.one().session.tls == "none"
