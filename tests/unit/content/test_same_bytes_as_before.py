"""Messages built with a given Message-ID and Date have the bytes they always had.

A journal's resume rebuilds each message from its recorded Message-ID and
Date, and must get the bytes first sent (a DKIM signature covers them), also
after an upgrade. These digests were taken from main 2e2ccdf, before the
serialiser was made faster; any change to the bytes shows here.
"""

from __future__ import annotations

import hashlib

import pytest

from mailer import Address, Attachment, Message

SENDER = Address.parse("Example Shop <shop@example.test>", field="sender")
MESSAGE_ID = "<0123456789abcdef0123456789abcdef@example.test>"
DATE = "Tue, 24 Nov 2026 10:00:00 +0000"
PNG = bytes(range(256)) * 4


def _messages() -> dict[str, Message]:
    """Return messages covering each shape and encoding the serialiser writes."""
    text = "Hello Ann,\n\nYour number is C-000001.\n\n-- \nExample Shop\n"
    html = "<!doctype html>\n<p>Hello <b>Ann</b>,</p>\n<p>C-000001</p>\n"
    return {
        "plain": Message(to="ann@example.test", subject="Welcome", body=text),
        "no final newline": Message(to="ann@example.test", subject="s", body="x"),
        "alternative": Message(
            to="Ann Example <ann@example.test>", subject="Hi", body=text, html=html
        ),
        "unicode": Message(
            to=Address.create("zoe@example.test", "Zoë Ünïcode", field="to"),
            subject="Welcome to Example Shop, Zoë!",
            body="Grüße, Zoë\n",
            html="<p>Grüße, Zoë</p>\n",
        ),
        "cjk base64": Message(
            to="li@example.test", subject="李雷 你好", body="这是一封测试邮件。\n" * 5
        ),
        "long lines and CR": Message(
            to="ann@example.test",
            subject="x" * 120,
            body="a\r\nb\rc\n" + "y" * 1200 + "\n\x07bell\n",
            html="z" * 1000 + "\n",
        ),
        "headers and lists": Message(
            to=["ann@example.test", "Bob <bob@example.test>"],
            cc=["carol@example.test"],
            bcc=["dave@example.test"],
            reply_to="Support <support@example.test>",
            subject="=?utf-8?q?looks_encoded?=",
            body=text,
            headers={"X-Campaign": "spring  sale", "X-Tag": "one"},
            unsubscribe=["https://shop.example.test/u/1", "mailto:u@example.test"],
        ),
        "attachments": Message(
            to="ann@example.test",
            subject="Files",
            body=text,
            html='<p><img src="cid:logo@example.test"></p>\n',
            attachments=[
                Attachment(
                    PNG,
                    filename="logo.png",
                    disposition="inline",
                    content_id="logo@example.test",
                ),
                Attachment(b"a,b\n1,2\n", filename="data.csv"),
                Attachment("Résumé".encode(), filename="résumé.txt"),
            ],
        ),
    }


DIGESTS = {
    "plain": "2b7cdf71277ccb774c3154cb7c444df5c8f07a67433098bfa6ebdb7baa8ab10c",
    "no final newline": "0caa69e12b29b79a4592765b4bf854a7f792e78a327e934c9b07a752cbfbfbaa",
    "alternative": "5abefb30d6cc2bacadc2d44a3a10439c1f64fbecb3b29f7282ce1c0c7a120be6",
    "unicode": "840f3160a597bf085f6c0806b0f228c8591823fd73d69e371a828407838e3b2c",
    "cjk base64": "2d99ba580755174c589101079881ad7e753892937907790fd21e5d003c0bbd02",
    "long lines and CR": "cec4784cfd5cf04a112c6da10c98e19119a23db19a7e264b016f3d53206dccb8",
    "headers and lists": "8d137ecb11739512f4806305afd8953cff5fc26181ce21f2dfb806b5484db1e8",
    "attachments": "2dcb170954c911c238b795a6721eff56af234f535eda340e34e3e0d68994d57d",
}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_a_message_rebuilt_from_its_id_and_date_has_the_same_bytes(name: str) -> None:
    """The bytes of each message shape match those main wrote before."""
    content = _messages()[name].to_bytes(SENDER, message_id=MESSAGE_ID, date=DATE)
    assert hashlib.sha256(content).hexdigest() == DIGESTS[name]
