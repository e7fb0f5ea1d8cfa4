"""The pipelined reply reader: the same replies however the bytes arrive, and timeouts."""

from __future__ import annotations

import asyncio
import itertools

import aiosmtplib
import pytest
from aiosmtplib.response import SMTPResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.transports.smtp.pipelining import (
    INVALID_REPLY,
    MAX_LINE_LENGTH,
    MAX_REPLY_LENGTH,
    ReplyReader,
)


def reference_replies(stream: bytes) -> tuple[list[SMTPResponse], str | None]:
    """Parse a whole stream one line at a time, as RFC 5321 4.2 reads replies.

    A slow, plain statement of the rules the reader keeps (aiosmtplib's
    limits): the replies before the first malformed line, then why it stopped.
    """
    replies: list[SMTPResponse] = []
    lines: list[bytes] = []
    for line in stream.replace(b"\n", b"\n\0").split(b"\0"):
        if not line:
            continue
        if not line.endswith(b"\n"):
            held = len(line) + sum(map(len, lines))
            return replies, "Response too long" if held > MAX_REPLY_LENGTH else None
        if len(line) > MAX_LINE_LENGTH or not line[:3].isdigit():
            return replies, f"Malformed SMTP response line: {line[:80]!r}"
        lines.append(line)
        if line[3:4] != b"-":
            text = b"\n".join(part[4:].strip(b" \t\r\n") for part in lines)
            replies.append(
                SMTPResponse(int(line[:3]), text.decode("utf-8", "surrogateescape"))
            )
            lines = []
    if sum(map(len, lines)) > MAX_REPLY_LENGTH:
        return replies, "Response too long"
    return replies, None


LINES = st.sampled_from(
    [
        b"250 2.0.0 ok\r\n",
        b"250-first\r\n",
        b"250-second line\r\n",
        b"354 go ahead\r\n",
        b"421 4.3.2 closing\r\n",
        b"550 5.1.1 no such user \xe2\x80\x94 \xff\r\n",
        b"250\r\n",
        b"250 bare newline\n",
        b"250-" + b"x" * 9000 + b"\r\n",
        b"250-" + b"y" * 7000 + b"\r\n",
        b"garbage\r\n",
        b"25\r\n",
    ]
)


async def collected(reader: ReplyReader) -> tuple[list[SMTPResponse], str | None]:
    """Drain the reader: every reply it parsed, then the failure it keeps, if any."""
    replies = []
    while (reply := reader.next_ready()) is not None:
        replies.append(reply)
    loop = asyncio.get_running_loop()
    try:
        await reader.read(loop.time())
    except aiosmtplib.SMTPReadTimeoutError:
        return replies, None
    except aiosmtplib.SMTPResponseException as exc:
        return replies, exc.message if exc.code == INVALID_REPLY else repr(exc)
    finally:
        reader.close()
    raise AssertionError("a reply was left after draining")


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(LINES, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=8),
)
def test_replies_are_the_same_however_the_stream_is_cut(
    lines: list[bytes], cuts: list[int]
) -> None:
    """Reads cut anywhere give the replies (and the failure) of the whole stream."""
    stream = b"".join(lines)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    reader = ReplyReader(asyncio.Protocol())
    for start, end in itertools.pairwise(bounds):
        reader.data_received(stream[start:end])
    assert asyncio.run(collected(reader)) == reference_replies(stream)


async def test_a_wait_times_out_at_its_own_end_with_one_timer() -> None:
    """Each wait times out at its own end; a later wait reuses the earlier timer."""
    reader = ReplyReader(asyncio.Protocol())
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(reader.read(loop.time() + 0.05))
    await asyncio.sleep(0)
    reader.data_received(b"250 ok\r\n")
    assert (await first).code == 250
    started = loop.time()
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await reader.read(loop.time() + 0.2)  # later than the first timer
    assert 0.19 <= loop.time() - started < 1.0
    started = loop.time()
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await reader.read(loop.time() + 0.05)  # sooner than any timer left
    assert 0.04 <= loop.time() - started < 0.5
    reader.close()


async def test_a_reply_that_arrives_before_the_end_is_returned() -> None:
    """A reply arriving while a timed wait is on ends the wait with the reply."""
    reader = ReplyReader(asyncio.Protocol())
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, reader.data_received, b"250-a\r\n250 b\r\n")
    reply = await reader.read(loop.time() + 5)
    assert (reply.code, reply.message) == (250, "a\nb")
    reader.close()
