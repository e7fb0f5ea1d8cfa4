"""FaultPlan without sockets: which rule fires when, what it records, bad input."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from mailer.testing import END_OF_DATA, GREETING, FaultPlan
from mailer.testing.server.rules import (
    AcceptAndDrop,
    HangUp,
    HangUpInData,
    KeepThenGarbage,
    SendGarbage,
    SendReply,
    StaySilent,
)


def test_a_reply_rule_answers_its_command_only() -> None:
    """reply("MAIL", ...) decides MAIL and leaves RCPT alone."""
    plan = FaultPlan()
    plan.reply("mail", 451, "4.7.1 Later")
    assert plan.evaluate("RCPT", "TO:<a@example.test>", 1).action is None
    action = plan.evaluate("MAIL", "FROM:<s@example.test>", 1).action
    assert action == SendReply(451, "4.7.1 Later", close=False)


def test_times_and_after_count_matches() -> None:
    """after=2, times=2: matches 3 and 4 fire, then the rule is spent."""
    plan = FaultPlan()
    rule = plan.reply("RCPT", 452, after=2, times=2)
    fired = [
        plan.evaluate("RCPT", "TO:<a@x.test>", 1).action is not None for _ in range(6)
    ]
    assert fired == [False, False, True, True, False, False]
    assert rule.fired == 2
    assert not rule.is_armed
    assert rule.matches == 4  # a spent rule stops counting


def test_the_first_rule_that_fires_answers_and_later_ones_do_not_see_it() -> None:
    """Two replies at MAIL: the first answers; the second's count does not move."""
    plan = FaultPlan()
    first = plan.reply("MAIL", 451, times=1)
    second = plan.reply("MAIL", 550)
    assert plan.evaluate("MAIL", None, 1).action == SendReply(
        451, "4.0.0 Fault injected at MAIL", close=False
    )
    assert (first.fired, second.matches) == (1, 0)
    assert plan.evaluate("MAIL", None, 1).action == SendReply(
        550, "5.0.0 Fault injected at MAIL", close=False
    )


def test_delays_and_hidden_extensions_add_up_and_let_a_reply_fire() -> None:
    """Modifiers do not answer: two delays sum, hidden names join, a reply still fires."""
    plan = FaultPlan()
    plan.delay("EHLO", 0.5)
    plan.hide_extensions("starttls")
    plan.reply("EHLO", 421)
    plan.delay("EHLO", 0.25)
    plan.hide_extensions("AUTH", "size")
    decision = plan.evaluate("EHLO", "client.example.test", 3)
    assert decision.delay == 0.75
    assert decision.hide == {"STARTTLS", "AUTH", "SIZE"}
    assert decision.action == SendReply(421, "4.0.0 Fault injected at EHLO", True)
    assert len(plan.firings) == 5
    assert {f.session for f in plan.firings} == {3}


def test_a_recipient_rule_compares_the_address_without_case() -> None:
    """recipient= matches the address inside RCPT's argument, any case, any options."""
    plan = FaultPlan()
    rule = plan.reply("RCPT", 550, recipient="Bob@Example.TEST")
    assert plan.evaluate("RCPT", "TO:<ann@example.test>", 1).action is None
    assert plan.evaluate("RCPT", "TO:<bob@example.test> NOTIFY=NEVER", 1).action
    assert plan.evaluate("RCPT", None, 1).action is None
    assert rule.fired == 1


def test_each_fault_kind_makes_its_action() -> None:
    """Every planning method makes the action the server carries out."""
    plan = FaultPlan()
    plan.greeting(554, "5.7.1 No")
    assert plan.evaluate(GREETING, None, 1).action == SendReply(554, "5.7.1 No", True)
    plan.clear()
    plan.no_greeting()
    assert plan.evaluate(GREETING, None, 1).action == StaySilent()
    plan.clear()
    plan.disconnect(after="rcpt")
    assert plan.evaluate("RCPT", None, 1).action == HangUp()
    plan.clear()
    plan.disconnect(during="data", after_bytes=10)
    assert plan.evaluate("DATA", None, 1).action == HangUpInData(10)
    plan.clear()
    plan.accept_then_drop()
    assert plan.evaluate(END_OF_DATA, None, 1).action == AcceptAndDrop()
    plan.clear()
    plan.garbage("noop", "???")
    assert plan.evaluate("NOOP", None, 1).action == SendGarbage("???")


def test_skip_lets_disconnects_through_first() -> None:
    """disconnect(after=..., skip=1): the second MAIL is the one dropped."""
    plan = FaultPlan()
    plan.disconnect(after="MAIL", skip=1, times=1)
    actions = [plan.evaluate("MAIL", None, n).action for n in (1, 2, 3)]
    assert actions == [None, HangUp(), None]


def test_a_421_closes_by_default_and_other_codes_do_not() -> None:
    """close defaults to True for 421 only, and can be set either way."""
    plan = FaultPlan()
    assert plan.reply("MAIL", 421).action == SendReply(
        421, "4.0.0 Fault injected at MAIL", True
    )
    assert plan.reply("MAIL", 451, "x", close=True).action == SendReply(451, "x", True)
    assert plan.reply("MAIL", 421, "x", close=False).action == SendReply(
        421, "x", False
    )


def test_a_multi_line_reply_is_sent_as_continuation_lines() -> None:
    """A "\\n" in the text makes "code-..." lines and a last "code ..." line."""
    assert SendReply(250, "a\nb\nc", False).lines() == ["250-a", "250-b", "250 c"]
    assert SendReply(550, "only", False).lines() == ["550 only"]


def test_a_rate_limit_fires_once_the_window_is_full() -> None:
    """rate_limit(2, per=10): MAIL is refused after two accepted messages, until they age out."""
    now = [0.0]
    plan = FaultPlan()
    plan.clock = lambda: now[0]
    rule = plan.rate_limit(2, per=10)
    assert plan.evaluate("MAIL", None, 1).action is None
    plan.note_accepted()
    now[0] = 4.0
    plan.note_accepted()
    refusal = plan.evaluate("MAIL", None, 1).action
    assert refusal == SendReply(421, "4.7.0 Too many messages, slow down", True)
    now[0] = 10.5  # the first message left the window
    assert plan.evaluate("MAIL", None, 1).action is None
    assert rule.fired == 1


def decisions(plan: FaultPlan, events: int) -> list[SendReply | None]:
    out = []
    for n in range(events):
        action = plan.evaluate(("MAIL", "RCPT", "DATA", END_OF_DATA)[n % 4], None, 1)
        assert action.action is None or isinstance(action.action, SendReply)
        out.append(action.action)
    return out


def test_chaos_is_reproducible_from_its_seed() -> None:
    """The same seed gives the same faults at the same events; rate 0 and 1 are exact."""
    runs = []
    for seed in (7, 7, 8):
        plan = FaultPlan()
        plan.chaos(seed=seed, rate=0.5)
        runs.append(decisions(plan, 40))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert 5 < sum(a is not None for a in runs[0]) < 35
    never, always = FaultPlan(), FaultPlan()
    never.chaos(seed=1, rate=0)
    always.chaos(seed=1, rate=1, replies=[(452, "4.5.3 Full")], times=3)
    assert decisions(never, 20) == [None] * 20
    assert (
        decisions(always, 5) == [SendReply(452, "4.5.3 Full", False)] * 3 + [None] * 2
    )


def test_chaos_leaves_commands_it_was_not_given_alone() -> None:
    """chaos(commands=["RCPT"]) never touches MAIL."""
    plan = FaultPlan()
    rule = plan.chaos(seed=3, rate=1, commands=["RCPT"])
    assert plan.evaluate("MAIL", None, 1).action is None
    assert plan.evaluate("RCPT", None, 1).action is not None
    assert rule.fired == 1


def test_firings_are_recorded_with_where_and_when() -> None:
    """Each firing names the rule, the command, the argument and the session."""
    plan = FaultPlan()
    rule = plan.reply("RCPT", 550, "5.1.1 Unknown", recipient="x@example.test")
    plan.evaluate("RCPT", "TO:<x@example.test>", 4)
    [firing] = plan.firings
    assert firing == rule.firings[0]
    assert firing.rule == "reply RCPT for x@example.test 550 5.1.1 Unknown"
    assert (firing.command, firing.argument, firing.session) == (
        "RCPT",
        "TO:<x@example.test>",
        4,
    )
    assert firing.at > 0


def test_assertions_on_rules_and_plans() -> None:
    """assert_fired and assert_all_fired pass and fail as they say."""
    plan = FaultPlan()
    rule = plan.reply("MAIL", 451, times=2)
    idle = plan.delay("RCPT", 1)
    with pytest.raises(AssertionError, match="fault never fired: reply MAIL 451"):
        rule.assert_fired()
    plan.evaluate("MAIL", None, 1)
    rule.assert_fired()
    rule.assert_fired(times=1)
    with pytest.raises(AssertionError, match=r"fired 1 time\(s\), expected 2"):
        rule.assert_fired(times=2)
    with pytest.raises(AssertionError, match="faults that never fired: delay RCPT 1s"):
        plan.assert_all_fired()
    idle.disarm()
    assert not idle.is_armed
    assert plan.evaluate("RCPT", None, 1).delay == 0


def test_clear_forgets_rules_and_firings() -> None:
    """clear() leaves an empty plan."""
    plan = FaultPlan()
    plan.reply("MAIL", 451)
    plan.evaluate("MAIL", None, 1)
    plan.clear()
    assert (plan.rules, plan.firings) == ((), ())
    assert plan.evaluate("MAIL", None, 1).action is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p: p.reply("HELLO", 550),
            "command: unknown 'HELLO'; use one of GREETING, EHLO",
        ),
        (lambda p: p.reply("MAIL", 250), "code: 250 is not a fault reply at MAIL"),
        (lambda p: p.reply("MAIL", 600), "code: 600 is not a fault reply"),
        (lambda p: p.reply(END_OF_DATA, 250, close=True), "close: an accepting reply"),
        (
            lambda p: p.reply("MAIL", 550, recipient="a@x.test"),
            "recipient: only a RCPT",
        ),
        (lambda p: p.reply("MAIL", 550, times=0), "times: must be 1 or more"),
        (lambda p: p.reply("MAIL", 550, after=-1), "after: must be 0 or more"),
        (lambda p: p.reply("MAIL", 550, "a\r\nb"), "text: use '\\n'"),
        (lambda p: p.delay("MAIL", -1), "seconds: must be 0 or more"),
        (lambda p: p.disconnect(), "exactly one of after= or during="),
        (lambda p: p.disconnect(after="MAIL", during="DATA"), "exactly one of"),
        (lambda p: p.disconnect(during="RCPT"), "during: only 'DATA'"),
        (lambda p: p.disconnect(during="DATA", after_bytes=0), "after_bytes"),
        (lambda p: p.disconnect(after="MAIL", skip=-2), "skip: must be 0 or more"),
        (lambda p: p.hide_extensions(), "names: give at least one"),
        (lambda p: p.garbage("MAIL", "a\nb"), "line: must be a single line"),
        (lambda p: p.rate_limit(0, per=1), "max_messages >= 1"),
        (lambda p: p.rate_limit(1, per=1, code=250), "code: 250 is not a refusal"),
        (lambda p: p.chaos(seed=1, rate=2), "rate: must be between 0 and 1"),
        (lambda p: p.chaos(seed=1, replies=[(250, "ok")]), "replies: give"),
    ],
)
def test_bad_plans_are_refused_with_a_clear_message(call, message) -> None:  # type: ignore[no-untyped-def]
    """Each impossible rule raises ValueError naming the argument."""
    with pytest.raises(ValueError, match=re.escape(message)):
        call(FaultPlan())


@pytest.mark.parametrize(
    ("form", "check"),
    [
        ("garbage", lambda line: not line[:3].isdigit()),
        ("too_long", lambda line: line.startswith("250 ") and len(line) > 8192),
        ("no_code", lambda line: not line[:3].isdigit()),
    ],
)
def test_a_malformed_final_reply_keeps_the_message_and_sends_a_bad_line(
    form: str, check: Callable[[str], bool]
) -> None:
    """malformed_final_reply(form): fires after the dot with a line of that form."""
    plan = FaultPlan()
    rule = plan.malformed_final_reply(form, times=1)
    assert plan.evaluate("DATA", None, 1).action is None
    action = plan.evaluate(END_OF_DATA, None, 1).action
    assert isinstance(action, KeepThenGarbage)
    assert check(action.line)
    assert plan.evaluate(END_OF_DATA, None, 1).action is None
    assert rule.fired == 1
    assert form in rule.description


def test_an_unknown_malformed_reply_form_is_refused() -> None:
    """malformed_final_reply("x") names the forms it knows."""
    with pytest.raises(ValueError, match="form: use one of garbage, too_long"):
        FaultPlan().malformed_final_reply("x")


def test_a_kept_failure_reply_is_only_for_the_end_of_data() -> None:
    """reply(END_OF_DATA, 451, keep=True) keeps the message; keep elsewhere is refused."""
    plan = FaultPlan()
    rule = plan.reply(END_OF_DATA, 451, "4.3.0 Later", keep=True)
    assert plan.evaluate(END_OF_DATA, None, 1).action == SendReply(
        451, "4.3.0 Later", close=False, keep=True
    )
    assert "(message kept)" in rule.description
    with pytest.raises(ValueError, match="keep: only with END_OF_DATA"):
        plan.reply("MAIL", 451, keep=True)
    with pytest.raises(ValueError, match="keep: only with END_OF_DATA"):
        plan.reply(END_OF_DATA, 250, keep=True)
