"""Line cap, throttled log, HTML reading, parts and the check tab (no sockets)."""

from __future__ import annotations

import logging
from email.message import EmailMessage

import pytest

from mailer.content.message import Envelope
from mailer.inbox.checks import GMAIL_CLIP_BYTES, check_mail
from mailer.inbox.guard import host_name, is_loopback_host
from mailer.inbox.limits import LineCap, ThrottledLog
from mailer.inbox.markup import read_markup
from mailer.inbox.parts import find_by_content_id, other_parts
from mailer.inbox.views import body_policy, prepare_html
from mailer.records import SentMail


def test_the_line_cap_passes_normal_lines_untouched() -> None:
    """Chunks of ordinary lines, split anywhere, come out byte for byte."""
    cap = LineCap(limit=16)
    data = b"EHLO me\r\nMAIL FROM:<a@x>\r\n" * 3
    out = b"".join(cap.feed(data[i : i + 5]) for i in range(0, len(data), 5))
    assert out == data


def test_the_line_cap_cuts_an_endless_line_and_resumes_after_it() -> None:
    """A line that never ends is kept to the limit; its end comes back as CRLF."""
    cap = LineCap(limit=10)
    out = [cap.feed(b"A" * 7), cap.feed(b"A" * 100), cap.feed(b"A" * 10**6)]
    assert b"".join(out) == b"A" * 10
    assert cap.feed(b"AAAA\r\n.\r\nQUIT\r\n") == b"\r\n.\r\nQUIT\r\n"


def test_the_line_cap_cuts_a_long_tail_inside_one_chunk() -> None:
    """A chunk ending in a long unfinished line keeps only the limit of it."""
    cap = LineCap(limit=4)
    assert cap.feed(b"ok\r\n" + b"B" * 50) == b"ok\r\nBBBB"
    assert cap.feed(b"BB\r\nnext\r\n") == b"\r\nnext\r\n"


def test_the_throttled_log_says_a_trouble_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Repeats within the interval are counted, and the count shows in the next line."""
    now = [0.0]
    log = ThrottledLog(
        logging.getLogger("test.throttle"), interval=60, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert log.warning("disk", "disk full") is True
        for _ in range(5):
            now[0] += 1
            assert log.warning("disk", "disk full") is False
        assert log.warning("other", "another trouble") is True
        now[0] += 60
        assert log.warning("disk", "disk full") is True
    assert [r.getMessage() for r in caplog.records] == [
        "disk full",
        "another trouble",
        "disk full (5 more since the last report)",
    ]


def test_markup_reads_text_images_and_links() -> None:
    """Visible text only; each image with its alt (None when absent); each link."""
    markup = read_markup(
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<p>Hi <b>Ann</b></p><img src='cid:a'><img src='b.png' alt=''/>"
        "<a href='https://x.test/a'>Go <i>now</i></a><script>evil()</script></body>"
    )
    assert markup.text == "Hi Ann\nGo now"
    assert [(i.src, i.alt) for i in markup.images] == [("cid:a", None), ("b.png", "")]
    assert [(link.href, link.text) for link in markup.links] == [
        ("https://x.test/a", "Go now")
    ]


def mail_with_html(html: str, *, text: str | None = "text") -> SentMail:
    message = EmailMessage()
    message["Subject"] = "checks"
    if text is not None:
        message.set_content(text)
        message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    return SentMail(
        envelope=Envelope(mail_from="", rcpt_tos=()), raw=message.as_bytes()
    )


def test_checks_find_missing_alt_remote_images_links_and_no_text() -> None:
    """The check tab's findings for an HTML-only message with problems."""
    report = check_mail(
        mail_with_html(
            "<img src='https://cdn.test/x.png'><img src='cid:y' alt='Y'>"
            "<a href='javascript:alert(1)'>click</a><a href='https://ok.test'>ok</a>",
            text=None,
        )
    )
    assert report.images_without_alt == ["https://cdn.test/x.png"]
    assert report.remote_images == ["https://cdn.test/x.png"]
    assert [link.href for link in report.links] == [
        "javascript:alert(1)",
        "https://ok.test",
    ]
    messages = " | ".join(f.message for f in report.findings)
    assert "no text/plain part" in messages
    assert "1 of 2 image(s) without alt text" in messages
    assert "javascript: scheme" in messages
    assert "Gmail" not in messages


def test_checks_measure_the_html_against_gmail_clipping() -> None:
    """HTML over 102 KB is flagged with its size; a small one is not."""
    big = check_mail(mail_with_html("<p>" + "x" * (GMAIL_CLIP_BYTES + 10) + "</p>"))
    assert big.html_bytes > GMAIL_CLIP_BYTES
    assert any("Gmail clips" in f.message for f in big.findings)
    small = check_mail(mail_with_html("<p>short</p>"))
    assert small.findings == []
    assert small.has_text


def test_parts_list_attachments_and_find_inline_images_by_content_id() -> None:
    """Bodies are not listed; an inline image is found by its Content-ID."""
    message = EmailMessage()
    message.set_content("text")
    message.add_alternative("<img src='cid:logo@x'>", subtype="html")
    message.get_payload()[1].add_related(  # type: ignore[index]
        b"PNG", maintype="image", subtype="png", cid="<logo@x>"
    )
    message.add_attachment(b"data", maintype="text", subtype="csv", filename="r.csv")
    parts = other_parts(message)
    assert [(p.content_type, p.inline, p.filename) for p in parts] == [
        ("image/png", True, None),
        ("text/csv", False, "r.csv"),
    ]
    found = find_by_content_id(message, "logo@x")
    assert found is not None
    assert found.get_payload(decode=True) == b"PNG"


def test_prepared_html_points_cid_at_the_inbox_and_drops_meta_refresh() -> None:
    """cid: URLs become inbox URLs; <meta http-equiv> is removed; links open a new tab."""
    html = prepare_html(
        "<meta http-equiv='refresh' content='0;url=https://evil.test'>"
        "<img src=\"cid:logo@x\"><div style='background:url(cid:bg)'></div>",
        cid_url="/messages/m1/cid/",
    )
    assert "http-equiv" not in html
    assert 'src="/messages/m1/cid/logo@x"' in html
    assert "url(/messages/m1/cid/bg)" in html
    assert html.startswith('<base target="_blank">')


def test_the_body_policy_blocks_scripts_and_remote_images_until_allowed() -> None:
    """No script source at all; remote images only when allowed."""
    policy = body_policy("http://127.0.0.1:8025", remote=False)
    assert "default-src 'none'" in policy
    assert "sandbox" in policy
    assert "allow-scripts" not in policy
    assert "https:" not in policy
    assert "https:" in body_policy("http://127.0.0.1:8025", remote=True)


@pytest.mark.parametrize(
    ("header", "name", "loopback"),
    [
        ("127.0.0.1:8025", "127.0.0.1", True),
        ("localhost", "localhost", True),
        ("[::1]:8025", "::1", True),
        ("app.localhost:80", "app.localhost", True),
        ("evil.example:8025", "evil.example", False),
        ("127.0.0.1.evil.example", "127.0.0.1.evil.example", False),
        ("[::ffff:8.8.8.8]:80", "::ffff:8.8.8.8", False),
        ("", "", False),
    ],
)
def test_host_headers_are_read_and_judged(
    header: str, name: str, loopback: bool
) -> None:
    """The Host name is parsed (IPv6 brackets, ports) and only loopback names pass."""
    assert host_name(header) == name
    assert is_loopback_host(header) is loopback
