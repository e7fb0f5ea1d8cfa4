"""The pure parts of the sender processes: shares, hand-out, result frames, the choice."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mailer import MailerSettings
from mailer.bulk import senders
from mailer.bulk.handout import (
    AHEAD_PER_SENDER,
    RESULT_FIELDS,
    ChunkDealer,
    FrameReader,
    ResultBatch,
    concurrency_shares,
    frame,
    pack_result,
    unpack_result,
)
from mailer.bulk.spool import Spool
from mailer.delivery.client import MessageClient, generate_message_client
from mailer.delivery.results import SendResult, SendStatus
from mailer.replies import RecipientStatus, Reply
from mailer.testing import MemoryTransport, capture_mail


@pytest.mark.parametrize(
    ("total", "count", "shares"),
    [(5, 2, [3, 2]), (4, 2, [2, 2]), (3, 3, [1, 1, 1]), (7, 3, [3, 2, 2]), (1, 1, [1])],
)
def test_concurrency_is_split_without_going_over(
    total: int, count: int, shares: list[int]
) -> None:
    """MAILER_CONCURRENCY is shared out, the first senders taking the rest."""
    assert concurrency_shares(total, count) == shares
    assert sum(shares) == total


@pytest.mark.parametrize(("total", "count"), [(2, 3), (5, 0)])
def test_more_senders_than_connections_is_refused(total: int, count: int) -> None:
    """A sender without a connection, or no sender at all, is a ValueError."""
    with pytest.raises(ValueError, match="cannot split"):
        concurrency_shares(total, count)


def test_the_first_deal_gives_each_sender_two_chunks_in_turn() -> None:
    """Three senders, ten chunks: 0 1 2 then 3 4 5, two each ahead."""
    dealer = ChunkDealer(range(10), 3)
    dealt = dealer.first_deal()
    assert dealt == [(0, 0), (1, 1), (2, 2), (0, 3), (1, 4), (2, 5)]
    assert AHEAD_PER_SENDER == 2
    assert dealer.unfinished(0) == [(0, False), (3, False)]


def test_a_sender_gets_a_chunk_each_time_it_starts_one() -> None:
    """A started chunk brings the next; a slow sender that starts none gets none."""
    dealer = ChunkDealer(range(8), 2)
    dealer.first_deal()  # 0, 2 to sender 0; 1, 3 to sender 1
    assert dealer.started(0, 0) == 4
    assert dealer.started(0, 2) == 5
    assert dealer.started(0, 4) == 6
    assert dealer.started(1, 1) == 7
    assert dealer.is_empty
    assert dealer.started(0, 5) is None
    assert dealer.unfinished(1) == [(1, True), (3, False), (7, False)]


def test_finished_chunks_leave_a_senders_holding() -> None:
    """Finished chunks are forgotten; what is left is what a dead sender held."""
    dealer = ChunkDealer(range(4), 2)
    dealer.first_deal()
    dealer.started(0, 0)
    dealer.finished(0, 0)
    assert dealer.unfinished(0) == [(2, False)]
    dealer.forget(0)
    assert dealer.unfinished(0) == []


def test_the_rest_is_taken_once_and_no_more_dealt() -> None:
    """take_rest returns the chunks never handed out; deal then gives nothing."""
    dealer = ChunkDealer(range(6), 1)
    dealer.first_deal()
    assert dealer.take_rest() == [2, 3, 4, 5]
    assert dealer.deal(0) is None
    assert dealer.take_rest() == []


def test_a_result_batch_is_due_when_full_or_old() -> None:
    """64 results, or the first one 20 ms old, make a frame due; take empties it."""
    batch = ResultBatch(size=3, age=0.02)
    assert not batch.add("a", now=10.0)
    assert not batch.is_due(10.01)
    assert batch.is_due(10.025)
    assert not batch.add("b", now=10.03)
    assert batch.add("c", now=10.03)
    assert batch.take() == ["a", "b", "c"]
    assert len(batch) == 0
    assert not batch.is_due(100.0)


def test_frames_cut_anywhere_come_back_whole_and_in_order() -> None:
    """Frames read in pieces of any size give their items back, in order."""
    items: list[Any] = [("r", 0, n, n + 1, {"x": "y" * n}) for n in range(50)]
    data = b"".join(frame(items[n : n + 7]) for n in range(0, 50, 7))
    for piece in (1, 3, 64, len(data)):
        reader = FrameReader()
        got: list[Any] = []
        for start in range(0, len(data), piece):
            got.extend(reader.feed(data[start : start + piece]))
        assert got == items
        assert not reader.is_partial


def test_a_frame_cut_short_is_seen_as_partial() -> None:
    """A sender that died mid-write leaves a partial frame, which gives nothing."""
    data = frame([("e",)])
    reader = FrameReader()
    assert reader.feed(data[:-1]) == []
    assert reader.is_partial
    assert reader.feed(data[-1:]) == [("e",)]


def client_for(**values: Any) -> MessageClient:
    """Return a client made from settings (no connection is opened)."""
    base: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": 2525,
        "from_": "shop@example.test",
        "workers": 2,
    }
    base.update(values)
    if "dsn" in values:  # the DSN names the relays instead
        del base["smtp_host"], base["smtp_port"]
    return MessageClient(MailerSettings(_env_file=None, **base))  # type: ignore[call-arg]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """A spool of three (empty) chunks."""
    made = Spool(tmp_path)
    made.chunks = 3
    return made


def test_a_batch_of_several_chunks_with_workers_gets_senders(spool: Spool) -> None:
    """Two workers, five connections, three chunks: two senders."""
    assert senders.sender_count(client_for(), spool) == 2
    assert senders.sender_count(client_for(workers=4, concurrency=3), spool) == 3


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "inbox.localhost"]
)
def test_a_relay_on_this_machine_gets_senders_only_when_asked(
    host: str, spool: Spool
) -> None:
    """Automatic workers leave a local server its cores; --workers 2 still asks for two."""
    assert senders.sender_count(client_for(smtp_host=host, workers=0), spool) == 1
    assert senders.sender_count(client_for(smtp_host=host, workers=2), spool) == 2


@pytest.mark.parametrize("host", ["smtp.example.test", "192.0.2.10", "2001:db8::1"])
def test_a_relay_elsewhere_gets_senders_by_default(host: str, spool: Spool) -> None:
    """Automatic workers on a multi-core machine: senders for a remote relay."""
    expected = min(senders.worker_count(0), 5)
    assert (
        senders.sender_count(client_for(smtp_host=host, workers=0), spool) == expected
    )


@pytest.mark.parametrize(
    "values",
    [
        {"workers": 1},
        {"concurrency": 1},
        {"rate_limit": "10/s"},
        {"dsn": "smtp://127.0.0.1:2525?rate=10/s"},
        {"dsn": "failover(smtp://127.0.0.1:2525 smtp://127.0.0.1:2526)"},
        {"dsn": "console://"},
        {"redirect_to": "qa@example.test"},
    ],
    ids=[
        "workers_1",
        "one_connection",
        "rate",
        "dsn_rate",
        "failover",
        "console",
        "redirect",
    ],
)
def test_batches_that_must_stay_in_one_process(
    spool: Spool, values: dict[str, Any]
) -> None:
    """Settings whose sending would change in other processes keep one process."""
    assert senders.sender_count(client_for(**values), spool) == 1


def test_one_chunk_keeps_one_process(spool: Spool) -> None:
    """A batch of one chunk is sent here: forking would cost more."""
    spool.chunks = 1
    assert senders.sender_count(client_for(), spool) == 1


def test_an_injected_transport_keeps_one_process(spool: Spool) -> None:
    """A client on a MemoryTransport, or made under capture_mail, sends here."""
    settings = client_for().settings
    assert (
        senders.sender_count(
            MessageClient(settings, transport=MemoryTransport()), spool
        )
        == 1
    )
    with capture_mail():
        assert senders.sender_count(generate_message_client(settings), spool) == 1


def test_a_packed_result_unpacks_equal_with_every_field() -> None:
    """pack_result keeps every SendResult field: replies, refusals, statuses."""
    result = SendResult.of(
        SendStatus.FAILED,
        to=("a@example.test", "b@example.test"),
        message_id="<1@example.test>",
        recipients={
            "a@example.test": RecipientStatus.ACCEPTED,
            "b@example.test": RecipientStatus.REJECTED,
        },
        refused={"b@example.test": Reply(550, "5.1.1 no such user")},
        reply=Reply(421, "4.3.2 try later"),
        error="421 try later",
        transient=True,
        attempts=3,
        ambiguous=True,
    )
    assert tuple(f.name for f in dataclasses.fields(SendResult)) == RESULT_FIELDS
    assert unpack_result(pack_result(result)) == result
    plain = SendResult.of(
        SendStatus.SENT,
        to=("a@example.test",),
        message_id=None,
        recipients={},
        refused={},
    )
    assert unpack_result(pack_result(plain)) == plain
