"""The connection phases' table: every phase is reachable from HELLO, ONLINE only
through a checked password, every check can lead back, and CLOSED is final."""

from __future__ import annotations

import pytest

from twisted_chat.server.phases import TRANSITIONS, IllegalStep, Phase, Step, after

WAITING = frozenset({Phase.CHECKING_NAME, Phase.CHECKING_PASSWORD, Phase.CREATING_ACCOUNT})
"""Phases in which a check is under way and the connection reads nothing."""


def reachable_from(start: Phase) -> set[Phase]:
    seen = {start}
    frontier = [start]
    while frontier:
        phase = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is phase and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_every_phase_is_reachable_and_closing_is_always_possible() -> None:
    assert reachable_from(Phase.HELLO) | {Phase.CLOSED} == set(Phase)
    for phase in Phase:
        assert after(phase, Step.CLOSE) is Phase.CLOSED


def test_online_only_after_a_checked_or_created_account() -> None:
    into_online = {source for (source, _), target in TRANSITIONS.items() if target is Phase.ONLINE}
    assert into_online == {Phase.CHECKING_PASSWORD, Phase.CREATING_ACCOUNT}
    assert all(
        step is Step.ACCEPTED for (_, step), target in TRANSITIONS.items() if target is Phase.ONLINE
    )


def test_every_waiting_phase_has_a_way_back() -> None:
    for phase in WAITING:
        targets = {t for (source, _), t in TRANSITIONS.items() if source is phase}
        assert targets - {Phase.ONLINE, Phase.CLOSED}, phase


def test_a_closed_connection_stays_closed_whatever_comes_back() -> None:
    for step in Step:
        assert after(Phase.CLOSED, step) is Phase.CLOSED


@pytest.mark.parametrize(
    ("phase", "step"),
    [
        (Phase.HELLO, Step.ACCEPTED),
        (Phase.USERNAME, Step.PASSWORD_GIVEN),
        (Phase.ONLINE, Step.GREETED),
        (Phase.PASSWORD, Step.ACCEPTED),
    ],
)
def test_a_step_the_table_lacks_is_a_bug_said_loudly(phase: Phase, step: Step) -> None:
    with pytest.raises(IllegalStep):
        after(phase, step)
