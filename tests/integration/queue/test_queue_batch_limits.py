"""`send --queue` and the size limit: an oversized row is reported, never dropped silently.

Found by attacking the batch enqueue: the check pass renders each row but does
not build its bytes, so a row whose message is over MAILER_MAX_MESSAGE_SIZE
passed it; the enqueue pass then refused it with the size error and skipped
it as "reported by the check pass", which it had not been. The batch went out
one message short, with exit 0 and no word about that row.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailer import MailerSettings
from mailer.exceptions import InvalidRecipientsError
from mailer.queue.batches import enqueue_batch

LIMIT = 50_000  # a row over it still fits in one CSV cell (131,072)
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def rows(oversized_at: int) -> list[dict[str, str]]:
    """Three rows; the one at index ``oversized_at`` renders over ``LIMIT``."""
    return [
        {
            "email": f"user{n}@example.test",
            "name": f"User {n}",
            "customer_id": "C-" + ("9" * 2 * LIMIT if n == oversized_at else str(n)),
            "plan": "pro",
        }
        for n in range(3)
    ]


async def test_an_oversized_row_refuses_the_batch_and_names_its_line(
    queue_settings: Callable[..., MailerSettings], query: Any
) -> None:
    """InvalidRecipientsError naming line 3 and the setting; nothing enqueued."""
    settings = queue_settings(max_message_size=LIMIT)
    with pytest.raises(InvalidRecipientsError) as caught:
        await enqueue_batch("welcome", rows(oversized_at=1), settings=settings)
    [bad] = caught.value.rows
    assert bad.line == 2
    assert "MAILER_MAX_MESSAGE_SIZE" in bad.error
    assert "\n" not in str(caught.value)
    assert await query("SELECT count(*) FROM mailer_messages") == [(0,)]
    assert await query("SELECT count(*) FROM procrastinate_jobs") == [(0,)]
    assert await query("SELECT count(*) FROM mailer_batches") == [(0,)]


async def test_with_skip_invalid_the_oversized_row_is_listed_with_the_bad_ones(
    queue_settings: Callable[..., MailerSettings], query: Any
) -> None:
    """skip_invalid: the others are enqueued; the oversized row is in ``invalid``."""
    settings = queue_settings(max_message_size=LIMIT)
    source = rows(oversized_at=2)
    source.insert(0, {"email": "not an address", "name": "X", "customer_id": "C"})
    batch = await enqueue_batch("welcome", source, settings=settings, skip_invalid=True)
    assert batch.messages == 2
    assert [
        (row.line, "MAILER_MAX_MESSAGE_SIZE" in row.error) for row in batch.invalid
    ] == [
        (1, False),
        (4, True),
    ]
    assert await query("SELECT email FROM mailer_messages ORDER BY id") == [
        ("user0@example.test",),
        ("user1@example.test",),
    ]


async def test_send_queue_exits_2_naming_the_oversized_line(
    tmp_path: Path, queue_database: str, query: Any
) -> None:
    """`mailer send --queue`: one line on stderr naming line 3, exit 2, no traceback."""
    recipients = tmp_path / "r.csv"
    with recipients.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["email", "name", "customer_id", "plan"])
        writer.writeheader()
        writer.writerows(rows(oversized_at=1))
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILER_")}
    env.update(
        MAILER_QUEUE_DSN=queue_database,
        MAILER_FROM="shop@example.test",
        MAILER_TEMPLATES_DIR=str(EXAMPLES / "templates"),
        MAILER_MAX_MESSAGE_SIZE=str(LIMIT),
    )
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "mailer", "send", "-t", "welcome"],
        *["-r", str(recipients), "--queue"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    text = stderr.decode()
    assert process.returncode == 2, text
    assert "line 3: size:" in text
    assert "MAILER_MAX_MESSAGE_SIZE" in text
    assert "Traceback" not in text
    assert b"enqueued" not in stdout
    assert await query("SELECT count(*) FROM mailer_messages") == [(0,)]
