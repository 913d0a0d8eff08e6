"""The transition tables against seed 000, and random walks that never leave the model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdock.model.lifecycle import (
    EXIT_CODE_STATES,
    STATES,
    STYLES,
    TERMINAL,
    IllegalTransition,
    Kind,
    State,
    allowed_next,
    check_transition,
    is_terminal,
)

SEED_AUTOMATED = [
    "UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR",
    "CANCELING", "CANCELED",
]
SEED_INTERACTIVE = ["UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "COMPLETE", "SYSTEM_ERROR", "CANCELING"]

# Every legal transition, written out by hand from the seed's prose (not derived from lifecycle.py): the
# happy and failure paths, cancellation from any live state, a retry back to QUEUED, and a job that fails
# before it is queued or while it waits (SYSTEM_ERROR from UNKNOWN/QUEUED).
LEGAL = {
    Kind.AUTOMATED: [
        ("UNKNOWN", "QUEUED"), ("QUEUED", "INITIALIZING"), ("INITIALIZING", "RUNNING"), ("RUNNING", "COMPLETE"),
        ("RUNNING", "EXECUTOR_ERROR"), ("RUNNING", "SYSTEM_ERROR"), ("INITIALIZING", "SYSTEM_ERROR"),
        ("QUEUED", "CANCELING"), ("INITIALIZING", "CANCELING"), ("RUNNING", "CANCELING"),
        ("CANCELING", "CANCELED"), ("INITIALIZING", "QUEUED"), ("RUNNING", "QUEUED"),
        ("UNKNOWN", "CANCELING"), ("UNKNOWN", "SYSTEM_ERROR"), ("QUEUED", "SYSTEM_ERROR"),
        ("INITIALIZING", "EXECUTOR_ERROR"),  # the driver fails before it reports RUNNING
    ],
    Kind.INTERACTIVE: [
        ("UNKNOWN", "QUEUED"), ("QUEUED", "INITIALIZING"), ("INITIALIZING", "RUNNING"), ("RUNNING", "CANCELING"),
        ("CANCELING", "COMPLETE"), ("INITIALIZING", "SYSTEM_ERROR"), ("QUEUED", "CANCELING"),
        ("INITIALIZING", "CANCELING"), ("RUNNING", "SYSTEM_ERROR"),
        ("UNKNOWN", "CANCELING"), ("UNKNOWN", "SYSTEM_ERROR"), ("QUEUED", "SYSTEM_ERROR"),
        ("INITIALIZING", "QUEUED"),  # a failed start that is retried
    ],
}
ILLEGAL = {
    Kind.AUTOMATED: [
        ("UNKNOWN", "RUNNING"), ("QUEUED", "COMPLETE"), ("COMPLETE", "RUNNING"), ("CANCELED", "QUEUED"),
        ("CANCELING", "COMPLETE"), ("EXECUTOR_ERROR", "QUEUED"), ("SYSTEM_ERROR", "RUNNING"),
    ],
    Kind.INTERACTIVE: [
        ("RUNNING", "COMPLETE"), ("RUNNING", "EXECUTOR_ERROR"), ("CANCELING", "CANCELED"),
        ("INITIALIZING", "EXECUTOR_ERROR"), ("COMPLETE", "QUEUED"), ("UNKNOWN", "RUNNING"),
    ],
}


def test_state_names_are_the_seeds():
    assert sorted(s.value for s in STATES[Kind.AUTOMATED]) == sorted(SEED_AUTOMATED)
    assert sorted(s.value for s in STATES[Kind.INTERACTIVE]) == sorted(SEED_INTERACTIVE)
    assert State.EXECUTOR_ERROR not in STATES[Kind.INTERACTIVE]
    assert State.CANCELED not in STATES[Kind.INTERACTIVE]


def test_terminal_states():
    assert {s.value for s in TERMINAL[Kind.AUTOMATED]} == {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
    assert {s.value for s in TERMINAL[Kind.INTERACTIVE]} == {"COMPLETE", "SYSTEM_ERROR"}
    assert {s.value for s in EXIT_CODE_STATES} == {"CANCELED", "EXECUTOR_ERROR", "SYSTEM_ERROR"}


@pytest.mark.parametrize("kind", list(Kind))
def test_legal_transitions_pass(kind):
    for cur, nxt in LEGAL[kind]:
        check_transition(kind, cur, nxt)


@pytest.mark.parametrize("kind", list(Kind))
def test_illegal_transitions_are_refused(kind):
    for cur, nxt in ILLEGAL[kind]:
        with pytest.raises(IllegalTransition) as exc:
            check_transition(kind, cur, nxt)
        assert cur in str(exc.value) and nxt in str(exc.value)


@pytest.mark.parametrize("kind", list(Kind))
def test_every_pair_is_decided_by_the_table(kind):
    """Each of the 81 pairs is allowed exactly when the hand-written table lists it, and ``allowed_next``
    agrees with ``check_transition``."""
    legal_pairs = {(State(a), State(b)) for a, b in LEGAL[kind]}
    for cur, nxt in itertools.product(State, State):
        legal = (cur, nxt) in legal_pairs
        assert (cur in STATES[kind] and nxt in allowed_next(kind, cur)) == legal, (cur, nxt)
        if legal:
            check_transition(kind, cur, nxt)
        else:
            with pytest.raises(IllegalTransition):
                check_transition(kind, cur, nxt)


def test_every_state_has_a_style():
    assert set(STYLES) == set(State)
    assert len({s.hex for s in STYLES.values()}) == len(State)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(list(Kind)), choices=st.lists(st.integers(min_value=0, max_value=1000), max_size=40))
def test_random_walks_never_leave_the_model(kind, choices):
    state = State.UNKNOWN
    for choice in choices:
        nxt = sorted(allowed_next(kind, state))
        if not nxt:
            assert is_terminal(kind, state)
            break
        state = nxt[choice % len(nxt)]
        assert state in STATES[kind]
    # every walk can still reach a terminal state from where it is
    seen, frontier = {state}, [state]
    while frontier:
        s = frontier.pop()
        for n in allowed_next(kind, s):
            if n not in seen:
                seen.add(n)
                frontier.append(n)
    assert seen & TERMINAL[kind]
