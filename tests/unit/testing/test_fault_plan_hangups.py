"""FaultPlan hang-ups for delivery tests: keep-then-hang-up, and chaos that disconnects."""

from __future__ import annotations

import pytest

from mailer.testing import END_OF_DATA, FaultPlan
from mailer.testing.server.rules import HangUp, HangUpInData, KeepThenHangUp, SendReply


def test_disconnect_after_the_dot_can_keep_the_message() -> None:
    """disconnect(after=END_OF_DATA, keep=True): deliver, then hang up unanswered."""
    plan = FaultPlan()
    rule = plan.disconnect(after=END_OF_DATA, keep=True, times=1)
    assert plan.evaluate(END_OF_DATA, None, 1).action == KeepThenHangUp()
    assert plan.evaluate(END_OF_DATA, None, 1).action is None
    assert rule.description == "disconnect at END_OF_DATA keeping the message x1"


def test_keep_only_makes_sense_after_the_dot() -> None:
    """keep=True anywhere else is refused: there is no message to keep yet."""
    with pytest.raises(ValueError, match="keep: only with after=END_OF_DATA"):
        FaultPlan().disconnect(after="RCPT", keep=True)
    with pytest.raises(ValueError, match="keep: only with after=END_OF_DATA"):
        FaultPlan().disconnect(during="DATA", keep=True)


def test_chaos_with_disconnects_hangs_up_in_a_way_that_fits_each_point() -> None:
    """At MAIL/RCPT a plain hang-up, mid-message at DATA, lost or kept after the dot."""
    plan = FaultPlan()
    plan.chaos(seed=5, rate=1, disconnects=True)
    seen: dict[str, set[type]] = {}
    for _ in range(200):
        for point in ("MAIL", "RCPT", "DATA", END_OF_DATA):
            action = plan.evaluate(point, None, 1).action
            seen.setdefault(point, set()).add(type(action))
    assert seen["MAIL"] == {SendReply, HangUp}
    assert seen["RCPT"] == {SendReply, HangUp}
    assert seen["DATA"] == {SendReply, HangUpInData}
    assert seen[END_OF_DATA] == {SendReply, HangUp, KeepThenHangUp}


def test_chaos_without_disconnects_only_replies() -> None:
    """The default chaos stays as it was: transient replies only."""
    plan = FaultPlan()
    plan.chaos(seed=5, rate=1)
    actions = {
        type(plan.evaluate(point, None, 1).action)
        for _ in range(100)
        for point in ("MAIL", "RCPT", "DATA", END_OF_DATA)
    }
    assert actions == {SendReply}


def test_chaos_with_disconnects_is_reproducible() -> None:
    """The same seed gives the same faults, hang-ups included."""

    def run(seed: int) -> list[object]:
        plan = FaultPlan()
        plan.chaos(seed=seed, rate=0.4, disconnects=True)
        return [
            plan.evaluate(point, None, 1).action
            for _ in range(50)
            for point in ("MAIL", "RCPT", "DATA", END_OF_DATA)
        ]

    assert run(11) == run(11)
    assert run(11) != run(12)
