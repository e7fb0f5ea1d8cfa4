"""A catalogue of hostile inputs (reliability.md section 4), each with the clear error or safe result it must get.

Every refusal must be a MailerError whose message is one line and names the
field or key (``field``/``key`` attribute and message prefix); no refusal may
echo a secret. Every accepted input states the property that makes it safe.
No sockets here: the wire-level proofs are in test_wire_injection.py.
"""

from __future__ import annotations

import email.policy
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from mailer import (
    Address,
    ConfigError,
    Envelope,
    HeaderInjectionError,
    InvalidAddressError,
    MailerError,
    MailerSettings,
    Message,
    MessageClient,
    MessageError,
    TemplateNotFoundError,
    TemplateSyntaxError,
    UndefinedVariableError,
    UnsafeTemplateError,
    render,
    render_string,
)
from mailer.bulk.sending import check_recipients
from mailer.transports import MemoryTransport

SENDER = Address.parse("Shop <shop@example.test>", field="sender")
SECRET = "hunter2-very-secret"


@dataclass(frozen=True)
class Hostile:
    """One hostile input: what is tried, and what it must get."""

    id: str
    attempt: Callable[[], object]
    error: type[MailerError] | None = None
    names: str | None = None  # the field or key the error must name
    check: Callable[[Any], None] | None = None  # the safe-result property
    secret: str | None = None  # must not appear in the error


def to(value: object) -> Callable[[], Message]:
    return lambda: Message(to=value, subject="s", body="b")  # type: ignore[arg-type]


def subject(value: str) -> Callable[[], Message]:
    return lambda: Message(to="a@example.test", subject=value, body="b")


def header(name: str, value: str) -> Callable[[], Message]:
    return lambda: Message(
        to="a@example.test", subject="s", body="b", headers={name: value}
    )


def body(value: object) -> Callable[[], Message]:
    return lambda: Message(to="a@example.test", subject="s", body=value)  # type: ignore[arg-type]


def parsed(message: Message) -> EmailMessage:
    raw = message.to_bytes(SENDER, message_id="<1@example.test>", date="x")
    return BytesParser(policy=email.policy.default).parsebytes(raw)  # type: ignore[return-value]


def wire(message: Message) -> bytes:
    return message.to_bytes(SENDER, message_id="<1@example.test>", date="x")


def settings(**values: Any) -> Callable[[], MailerSettings]:
    return lambda: MailerSettings(_env_file=None, **values)


def from_dotenv(text: str) -> Callable[[], MailerSettings]:
    def load() -> MailerSettings:
        Path(".env").write_text(text, encoding="utf-8")  # cwd is the test's tmp dir
        return MailerSettings()

    return load


def untrusted(source: str, **context: Any) -> Callable[[], Message]:
    return lambda: render_string(
        "s", source, trusted=False, to="a@example.test", context=context
    )


def prepared(message: Callable[[], Message], **values: Any) -> Callable[[], object]:
    client = MessageClient(
        MailerSettings(_env_file=None, from_="shop@example.test", **values),
        transport=MemoryTransport(),
    )
    return lambda: client.prepare(message())


def template_set(tmp: str, subject_src: str, text: str, html: str | None) -> Path:
    root = Path(tmp)
    folder = root / "t"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subject.txt").write_text(subject_src, encoding="utf-8")
    (folder / "body.txt").write_text(text, encoding="utf-8")
    if html is not None:
        (folder / "body.html").write_text(html, encoding="utf-8")
    return root


def rendered(
    subject_src: str, text: str, html: str | None = None, **context: Any
) -> Callable[[], Message]:
    def run() -> Message:
        root = template_set(
            f"set-{abs(hash((subject_src, text, html)))}", subject_src, text, html
        )
        return render("t", to="a@example.test", context=context, templates_dir=root)

    return run


# --- safe-result properties -------------------------------------------------


def only_crlf(message: Message) -> None:
    raw = wire(message)
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert b"\n" not in raw.replace(b"\r\n", b"")


def lines_within_998(message: Message) -> None:
    assert max(len(line) for line in wire(message).split(b"\r\n")) <= 998


def subject_round_trips(value: str) -> Callable[[Message], None]:
    def check(message: Message) -> None:
        lines_within_998(message)
        assert parsed(message)["Subject"] == value

    return check


def name_round_trips(name: str, addr: str) -> Callable[[Message], None]:
    def check(message: Message) -> None:
        [mailbox] = parsed(message)["To"].addresses
        assert (mailbox.display_name, mailbox.addr_spec) == (name, addr)
        assert message.envelope(SENDER).rcpt_tos == (addr,)

    return check


def envelope_is(*recipients: str, smtputf8: bool = False) -> Callable[[Message], None]:
    def check(message: Message) -> None:
        envelope = message.envelope(SENDER)
        assert envelope.rcpt_tos == recipients
        assert envelope.smtputf8 is smtputf8

    return check


def body_is(text: str) -> Callable[[Message], None]:
    def check(message: Message) -> None:
        only_crlf(message)
        lines_within_998(message)
        # The parser keeps the wire's CRLF in a 7bit body; compare the lines.
        assert parsed(message).get_content().replace("\r\n", "\n") == text

    return check


def no_raw_nul(message: Message) -> None:
    assert b"\x00" not in wire(message)
    assert parsed(message).get_content() == "a\x00b"


def html_escaped(message: Message) -> None:
    assert message.html is not None
    assert "&lt;script&gt;" in message.html
    assert "<script>" not in message.html
    assert "<script>" in message.body


def body_contains(text: str) -> Callable[[Message], None]:
    def check(message: Message) -> None:
        assert text in message.body

    return check


def settings_refuse_nothing(settings_obj: MailerSettings) -> None:
    assert settings_obj.tls_mode == "none"
    assert settings_obj.smtp_insecure_plaintext is True


def password_is(expected: str) -> Callable[[MailerSettings], None]:
    def check(loaded: MailerSettings) -> None:
        assert loaded.smtp_password is not None
        assert loaded.smtp_password.get_secret_value() == expected

    return check


def bad_rows_listed(result: tuple[Any, list[Any]]) -> None:
    summary, errors = result
    assert summary.valid == 2
    assert [row.line for row in errors] == [2]
    assert "to" in errors[0].error


LONG = "word " * 1000
TOKEN = "x" * 2000


CASES: list[Hostile] = [
    # Addresses (4.2)
    Hostile(
        "A1-crlf-in-address", to("a\r\nb@example.test"), HeaderInjectionError, "to"
    ),
    Hostile(
        "A1-rcpt-smuggled",
        to("a@example.test\r\nRCPT TO:<evil@example.test>"),
        HeaderInjectionError,
        "to",
    ),
    Hostile("A1-nul", to("a\x00@example.test"), HeaderInjectionError, "to"),
    Hostile("A1-tab", to("a\t@example.test"), HeaderInjectionError, "to"),
    Hostile(
        "A1-unicode-line-separator",
        to("a\u2028b@example.test"),
        HeaderInjectionError,
        "to",
    ),
    Hostile(
        "A2-two-in-one-field",
        to("A <a@example.test>, b@example.test"),
        InvalidAddressError,
        "to",
    ),
    Hostile(
        "A2-semicolon-list",
        to("a@example.test; b@example.test"),
        InvalidAddressError,
        "to",
    ),
    Hostile(
        "A2-second-in-list",
        to(["a@example.test", "b@example.test, c@example.test"]),
        InvalidAddressError,
        "to[1]",
    ),
    Hostile(
        "A4-quoted-at-sign",
        to('"x@evil.test y"@example.test'),
        InvalidAddressError,
        "to",
    ),
    Hostile(
        "A5-esmtp-param-smuggling",
        to('"foo@x> ORCPT=admin@a"@example.test'),
        InvalidAddressError,
        "to",
    ),
    Hostile(
        "A6-comment-trick",
        to("alice@example.org(<bob@example.org>"),
        InvalidAddressError,
        "to",
    ),
    Hostile(
        "A6-cve-2023-27043",
        to("alice@example.org)<bob@example.org>"),
        InvalidAddressError,
        "to",
    ),
    Hostile(
        "A6-bracket-in-name",
        to("Ann <bob@evil.test> <a@example.test>"),
        InvalidAddressError,
        "to",
    ),
    Hostile(
        "A7-utf8-local-part",
        to("jürgen@example.test"),
        check=envelope_is("jürgen@example.test", smtputf8=True),
    ),
    Hostile(
        "A7-idn-domain",
        to("ann@bücher.example"),
        check=envelope_is("ann@xn--bcher-kva.example"),
    ),
    Hostile("A8-empty", to(""), InvalidAddressError, "to"),
    Hostile("A8-null-path-recipient", to("<>"), InvalidAddressError, "to"),
    Hostile("A8-no-recipient", to([]), MessageError, "to"),
    Hostile("A8-not-a-string", to(42), InvalidAddressError, "to"),
    Hostile(
        "A11-local-part-65", to("x" * 65 + "@example.test"), InvalidAddressError, "to"
    ),
    Hostile(
        "A11-address-over-254",
        to("a@" + ".".join(["d" * 60] * 5) + ".test"),
        InvalidAddressError,
        "to",
    ),
    Hostile("A-space-in-address", to("a b@example.test"), InvalidAddressError, "to"),
    Hostile(
        "A-envelope-by-hand-crlf",
        lambda: Envelope(
            "a@example.test\r\nRCPT TO:<b@evil.test>", ("c@example.test",)
        ),
        HeaderInjectionError,
        "envelope.mail_from",
    ),
    Hostile(
        "A-envelope-by-hand-param",
        lambda: Envelope(
            "a@example.test", ("b@example.test NOTIFY=NEVER",)
        ).check_sendable(),
        HeaderInjectionError,
        "envelope.rcpt_tos[0]",
    ),
    Hostile(
        "A10-too-many-recipients",
        prepared(
            lambda: Message(
                to=[f"u{n}@example.test" for n in range(101)], subject="s", body="b"
            )
        ),
        MessageError,
        "recipients",
    ),
    # Display names
    Hostile(
        "N-crlf-bcc",
        lambda: Address.create(
            "a@example.test", "Ann\r\nBcc: evil@example.test", field="to"
        ),
        HeaderInjectionError,
        "to",
    ),
    Hostile(
        "N-lf-in-string-form",
        to("Ann\nX: y <a@example.test>"),
        HeaderInjectionError,
        "to",
    ),
    Hostile(
        "N-encoded-newline",
        to("=?utf-8?q?Ann=0ABcc:_evil@example.test?= <a@example.test>"),
        HeaderInjectionError,
        "to",
    ),
    Hostile(
        "N-quotes-and-comma",
        to('"Doe, John \\"JD\\"" <a@example.test>'),
        check=name_round_trips('Doe, John "JD"', "a@example.test"),
    ),
    Hostile(
        "N-address-inside-name",
        lambda: Message(
            to=Address.create("a@example.test", "Ann <bob@evil.test>", field="to"),
            subject="s",
            body="b",
        ),
        check=name_round_trips("Ann <bob@evil.test>", "a@example.test"),
    ),
    Hostile(
        "N-bidi-override",
        to("Ann \u202egnp.exe <a@example.test>"),
        check=name_round_trips("Ann \u202egnp.exe", "a@example.test"),
    ),
    Hostile(
        "N-long-cjk-name-no-spaces",
        lambda: Message(
            to=Address.create(
                "a@example.test", "株式会社サンプルシステムズジャパン営業部", field="to"
            ),
            subject="s",
            body="b",
        ),
        check=name_round_trips(
            "株式会社サンプルシステムズジャパン営業部", "a@example.test"
        ),
    ),
    Hostile(
        "N-c1-control", to("Ann\x9b31m <a@example.test>"), HeaderInjectionError, "to"
    ),
    Hostile("N-lone-surrogate", to("Ann \udcff <a@example.test>"), MessageError, "to"),
    # Subjects and headers (4.3)
    Hostile(
        "H1-crlf-bcc-in-subject",
        subject("Hi\r\nBcc: evil@example.test"),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "H1-bare-lf-in-subject",
        subject("Hi\nX-Injected: yes"),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "H1-bare-cr-in-subject",
        subject("Hi\rX-Injected: yes"),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "H1-nel-in-subject",
        subject("Hi\x85X-Injected: yes"),
        HeaderInjectionError,
        "subject",
    ),
    Hostile("H1-vertical-tab", subject("Hi\x0bthere"), HeaderInjectionError, "subject"),
    Hostile(
        "H2-q-encoded-newline",
        subject("=?utf-8?q?a=0AX-Injected:_yes?="),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "H2-b-encoded-newline",
        subject("=?utf-8?b?YQpYLUluamVjdGVkOiB5ZXM=?="),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "H2-encoded-newline-custom-header",
        header("X-Tag", "=?utf-8?q?a=0D=0AX-Injected:_yes?="),
        HeaderInjectionError,
        "headers['X-Tag']",
    ),
    Hostile(
        "H2-malformed-base64-word",
        subject("=??B?00000?="),
        check=subject_round_trips("=??B?00000?="),
    ),
    Hostile(
        "H2-looks-encoded-harmless",
        subject("=?utf-8?q?hello?="),
        check=subject_round_trips("=?utf-8?q?hello?="),
    ),
    Hostile(
        "H1-crlf-in-custom-header",
        header("X-Tag", "a\r\nBcc: evil@example.test"),
        HeaderInjectionError,
        "headers['X-Tag']",
    ),
    Hostile(
        "H3-colon-in-name",
        header("X-Bad:Name", "v"),
        HeaderInjectionError,
        "headers['X-Bad:Name']",
    ),
    Hostile(
        "H3-space-in-name",
        header("X Bad", "v"),
        HeaderInjectionError,
        "headers['X Bad']",
    ),
    Hostile(
        "H3-crlf-in-name",
        header("X-A\r\nBcc", "v"),
        HeaderInjectionError,
        "headers['X-A\\r\\nBcc']",
    ),
    Hostile(
        "H3-non-ascii-name",
        header("X-Ünï", "v"),
        HeaderInjectionError,
        "headers['X-Ünï']",
    ),
    Hostile("H3-empty-name", header("", "v"), HeaderInjectionError, "headers['']"),
    Hostile(
        "H7-second-from",
        header("From", "evil@example.test"),
        MessageError,
        "headers['From']",
    ),
    Hostile(
        "H6-bcc-as-header",
        header("Bcc", "evil@example.test"),
        MessageError,
        "headers['Bcc']",
    ),
    Hostile(
        "H4-5000-char-subject",
        subject(LONG.strip()),
        check=subject_round_trips(LONG.strip()),
    ),
    Hostile("H4-2000-char-token", subject(TOKEN), check=subject_round_trips(TOKEN)),
    Hostile(
        "H5-non-ascii-subject",
        subject("Grüße, 李雷 ✓"),
        check=subject_round_trips("Grüße, 李雷 ✓"),
    ),
    Hostile(
        "H-megabyte-subject-with-lf",
        subject("x" * 1_000_000 + "\nBcc: e@example.test"),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "H-lone-surrogate-subject", subject("bad \udcff text"), MessageError, "subject"
    ),
    # Bodies
    Hostile(
        "B-dot-lines-and-commands",
        body("a\r\n.\r\nMAIL FROM:<e@example.test>\r\n.\nQUIT"),
        check=body_is("a\n.\nMAIL FROM:<e@example.test>\n.\nQUIT"),
    ),
    Hostile(
        "B-bare-cr-and-lf",
        body("one\rtwo\nthree\r\nfour"),
        check=body_is("one\ntwo\nthree\nfour"),
    ),
    Hostile("B-nul-byte", body("a\x00b"), check=no_raw_nul),
    Hostile("B-10000-char-line", body("y" * 10000), check=body_is("y" * 10000)),
    Hostile(
        "B-header-looking-text",
        body("\r\nX-Injected: yes\r\n"),
        check=body_is("\nX-Injected: yes\n"),
    ),
    Hostile("B-lone-surrogate", body("text \ud800"), MessageError, "body"),
    Hostile("B-bytes-not-text", body(b"raw bytes"), MessageError, "body"),
    Hostile(
        "B-over-max-message-size",
        prepared(
            lambda: Message(to="a@example.test", subject="s", body="z" * 5000),
            max_message_size=4096,
        ),
        MessageError,
        "size",
    ),
    # Templates and template data (4.4)
    Hostile(
        "T1-missing-variable", rendered("Hi {{ name }}", "b"), UndefinedVariableError
    ),
    Hostile(
        "T2-script-in-html-data",
        rendered("s", "{{ x }}", "<p>{{ x }}</p>", x="<script>alert(1)</script>"),
        check=html_escaped,
    ),
    Hostile(
        "T3-crlf-in-subject-data",
        rendered("Hi {{ name }}", "b", name="Ann\r\nBcc: evil@example.test"),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "T3-encoded-newline-in-subject-data",
        rendered("Hi {{ name }}", "b", name="=?utf-8?q?a=0AX-Injected:_yes?="),
        HeaderInjectionError,
        "subject",
    ),
    Hostile(
        "T8-data-that-looks-like-code",
        rendered("s", "{{ x }}", x="{{ 7*7 }}{% raw %}"),
        check=body_contains("{{ 7*7 }}{% raw %}"),
    ),
    Hostile("T6-syntax-error", rendered("s", "{% if %}"), TemplateSyntaxError),
    Hostile(
        "T7-path-traversal-set-name",
        lambda: render("../../etc", to="a@example.test", templates_dir="."),
        TemplateNotFoundError,
    ),
    Hostile(
        "T4-sandbox-mro", untrusted("{{ ''.__class__.__mro__ }}"), UnsafeTemplateError
    ),
    Hostile(
        "T4-sandbox-attr-filter",
        untrusted("{{ ''|attr('__class__') }}"),
        UnsafeTemplateError,
    ),
    Hostile(
        "T4-sandbox-format-escape",
        untrusted("{{ '{0.__class__}'.format(x) }}", x=1),
        UnsafeTemplateError,
    ),
    Hostile(
        "T4-sandbox-mutate-data",
        untrusted("{{ items.append(1) }}", items=[]),
        UnsafeTemplateError,
    ),
    Hostile(
        "T5-range-1e9",
        untrusted("{% for i in range(10**9) %}{% endfor %}"),
        UnsafeTemplateError,
    ),
    Hostile(
        "T5-nested-ranges",
        untrusted(
            "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
        ),
        UnsafeTemplateError,
    ),
    Hostile("T5-string-bomb", untrusted("{{ 'x' * 10**9 }}"), UnsafeTemplateError),
    Hostile("T5-power-bomb", untrusted("{{ 2 ** 1000000 }}"), UnsafeTemplateError),
    Hostile(
        "T5-format-width-bomb",
        untrusted("{{ '%999999999d' % 1 }}"),
        UnsafeTemplateError,
    ),
    Hostile(
        "T5-filter-width-bomb",
        untrusted("{{ 'x'|center(999999999) }}"),
        UnsafeTemplateError,
    ),
    Hostile(
        "T5-doubling-macro",
        untrusted(
            "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s }}{% endmacro %}{{ f('ab', 40) }}"
        ),
        UnsafeTemplateError,
    ),
    Hostile(
        "T5-huge-output",
        untrusted(
            "{% for i in range(100000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}"
        ),
        UnsafeTemplateError,
    ),
    Hostile(
        "T5-lipsum-removed", untrusted("{{ lipsum(1000000) }}"), UndefinedVariableError
    ),
    Hostile(
        "T-untrusted-subject-newline",
        lambda: render_string(
            "{{ s }}",
            "b",
            trusted=False,
            to="a@example.test",
            context={"s": "a\nBcc: e@example.test"},
        ),
        HeaderInjectionError,
        "subject",
    ),
    # Recipient rows
    Hostile(
        "R-bad-row-is-listed-with-its-line",
        lambda: check_recipients(
            "welcome",
            [
                {"email": "ann@example.test"},
                {"email": "bad\r\n@x"},
                {"email": "bob@example.test"},
            ],
            settings=MailerSettings(
                _env_file=None,
                templates_dir=Path(__file__).resolve().parents[2]
                / "examples"
                / "templates",
                from_="s@example.test",
            ),
            context={"name": "n", "customer_id": "1", "plan": "p"},
        ),
        check=bad_rows_listed,
    ),
    # Settings (4.1)
    Hostile(
        "C2-port-not-a-number",
        settings(smtp_port="abc"),
        ConfigError,
        "MAILER_SMTP_PORT",
    ),
    Hostile("C2-port-zero", settings(smtp_port=0), ConfigError, "MAILER_SMTP_PORT"),
    Hostile(
        "C2-port-70000", settings(smtp_port=70000), ConfigError, "MAILER_SMTP_PORT"
    ),
    Hostile(
        "C3-typo-in-secret-key",
        from_dotenv(f"MAILER_SMTP_PASSWROD={SECRET}\n"),
        ConfigError,
        "MAILER_SMTP_PASSWROD",
        secret=SECRET,
    ),
    Hostile(
        "C4-password-without-user",
        settings(smtp_password=SECRET),
        ConfigError,
        "MAILER_SMTP_USERNAME",
        secret=SECRET,
    ),
    Hostile(
        "C7-password-in-clear-to-remote",
        settings(
            smtp_host="smtp.example.com",
            smtp_tls="none",
            smtp_username="u",
            smtp_password=SECRET,
        ),
        ConfigError,
        "MAILER_SMTP_TLS",
        secret=SECRET,
    ),
    Hostile(
        "C7-even-with-insecure-plaintext",
        settings(
            smtp_host="smtp.example.com",
            smtp_tls="none",
            smtp_insecure_plaintext=True,
            smtp_username="u",
            smtp_password=SECRET,
        ),
        ConfigError,
        "MAILER_SMTP_TLS",
        secret=SECRET,
    ),
    Hostile(
        "C7-plaintext-to-remote",
        settings(smtp_host="smtp.example.com", smtp_tls="none"),
        ConfigError,
        "MAILER_SMTP_TLS",
    ),
    Hostile(
        "C7-plaintext-to-remote-explicitly",
        settings(
            smtp_host="relay.internal", smtp_tls="none", smtp_insecure_plaintext=True
        ),
        check=settings_refuse_nothing,
    ),
    Hostile(
        "C8-skip-verify-not-a-bool",
        settings(smtp_insecure_skip_verify="maybe"),
        ConfigError,
        "MAILER_SMTP_INSECURE_SKIP_VERIFY",
    ),
    Hostile(
        "C9-crlf-in-host",
        settings(smtp_host="smtp.example.com\r\nRCPT TO:<x@y>"),
        ConfigError,
        "MAILER_SMTP_HOST",
    ),
    Hostile(
        "C9-host-with-port",
        settings(smtp_host="smtp.example.com:25"),
        ConfigError,
        "MAILER_SMTP_HOST",
    ),
    Hostile(
        "C9-space-in-ehlo-name",
        settings(smtp_local_hostname="my host SIZE=1"),
        ConfigError,
        "MAILER_SMTP_LOCAL_HOSTNAME",
    ),
    Hostile(
        "C9-crlf-in-ehlo-name",
        settings(smtp_local_hostname="me\r\nMAIL FROM:<x@y>"),
        ConfigError,
        "MAILER_SMTP_LOCAL_HOSTNAME",
    ),
    Hostile(
        "C9-crlf-in-from",
        settings(from_="shop@example.test\r\nBcc: e@example.test"),
        ConfigError,
        "MAILER_FROM",
    ),
    Hostile(
        "C10-timeout-infinite",
        settings(timeout=float("inf")),
        ConfigError,
        "MAILER_TIMEOUT",
    ),
    Hostile("C10-timeout-zero", settings(timeout=0), ConfigError, "MAILER_TIMEOUT"),
    Hostile(
        "C11-concurrency-zero",
        settings(concurrency=0),
        ConfigError,
        "MAILER_CONCURRENCY",
    ),
    Hostile(
        "C12-crlf-edited-dotenv",
        from_dotenv(f"MAILER_SMTP_USERNAME=u\r\nMAILER_SMTP_PASSWORD={SECRET}\r\n"),
        check=password_is(SECRET),
    ),
    Hostile(
        "C12-cr-in-password-variable",
        settings(smtp_username="u", smtp_password=f"{SECRET}\r"),
        ConfigError,
        "MAILER_SMTP_PASSWORD",
        secret=SECRET,
    ),
    Hostile(
        "C-tls-min-version-1.0",
        settings(smtp_tls_min_version="1.0"),
        ConfigError,
        "MAILER_SMTP_TLS_MIN_VERSION",
    ),
    Hostile(
        "C-fingerprint-garbage",
        settings(smtp_tls_fingerprint="not-a-hash"),
        ConfigError,
        "MAILER_SMTP_TLS_FINGERPRINT",
    ),
    Hostile(
        "C-fingerprint-without-tls",
        settings(smtp_tls="none", smtp_tls_fingerprint="a" * 64),
        ConfigError,
        "MAILER_SMTP_TLS_FINGERPRINT",
    ),
    Hostile(
        "C-max-recipients-zero",
        settings(max_recipients=0),
        ConfigError,
        "MAILER_MAX_RECIPIENTS",
    ),
    Hostile(
        "C-tls-mode-unknown", settings(smtp_tls="ssl"), ConfigError, "MAILER_SMTP_TLS"
    ),
]


def test_the_catalogue_is_large_and_ids_are_unique() -> None:
    """At least 40 hostile inputs, each with its own id."""
    ids = [case.id for case in CASES]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(case: Hostile) -> None:
    """The input gets its clear one-line error naming the field, or its safe result."""
    if case.error is None:
        assert case.check is not None
        case.check(case.attempt())
        return
    with pytest.raises(case.error) as caught:
        case.attempt()
    message = str(caught.value)
    assert "\n" not in message
    assert "\r" not in message
    assert len(message) < 400  # a hostile megabyte is quoted as an excerpt
    if case.names is not None:
        named = getattr(caught.value, "field", None) or getattr(
            caught.value, "key", None
        )
        assert named == case.names
        assert message.startswith(f"{case.names}: ")
    if case.secret is not None:
        assert case.secret not in message
        assert case.secret not in repr(caught.value)
