"""The catalog holds every code of seed 000, with kind, state, description, action and message."""

from __future__ import annotations

import re
from pathlib import Path

from sparkdock.model import exit_codes
from sparkdock.model.lifecycle import Kind, State

SEED = next((Path(__file__).resolve().parents[2] / "shared" / "seeds").glob("000_*.txt"), None)


def _seed_codes() -> set[int]:
    if SEED is None:  # the seeds live beside the repo; the list is also written down here
        return set(exit_codes.SEED_CODES)
    text = SEED.read_text()
    return {int(m) for m in re.findall(r"^\s*(\d{1,2})\s*$", text, re.M) if int(m) >= 9}


def test_every_seed_code_is_in_the_catalog():
    codes = _seed_codes()
    assert {9, 10, 11, 12, 13, 14, 15, 16, 17, 18, *range(20, 30), 50, 51, 52} <= codes
    assert codes <= set(exit_codes.CATALOG)


def test_entries_are_complete():
    for code, e in exit_codes.CATALOG.items():
        assert e.code == code
        assert e.kinds and e.state in (State.CANCELED, State.EXECUTOR_ERROR, State.SYSTEM_ERROR)
        assert e.description and e.action and e.message and e.seed_message
        if not e.produced:
            assert e.not_produced_reason, code
        # the project's own words, not the other platform's
        for word in ("Azure", "WDL", "DRS", "TRS", "aztk", "SeqsLab"):
            assert word not in e.description + e.action + e.message, (code, word)


def test_kinds_and_states_follow_the_seed():
    assert exit_codes.codes_for(State.CANCELED, Kind.AUTOMATED) == {14, 15}
    assert exit_codes.codes_for(State.EXECUTOR_ERROR, Kind.AUTOMATED) == {18}
    assert exit_codes.codes_for(State.SYSTEM_ERROR, Kind.INTERACTIVE) == {50, 51, 52}
    assert exit_codes.codes_for(State.SYSTEM_ERROR, Kind.AUTOMATED) == {9, 10, 11, 12, 13, 16, 17, *range(20, 30)}
    assert exit_codes.codes_for(State.CANCELED, Kind.INTERACTIVE) == frozenset()


def test_kernel_exit_codes_and_message():
    assert sorted(exit_codes.KERNEL_EXIT_CODES) == [1, 2, 3, 4, 5, 6, 7]
    assert exit_codes.message(18, kernel_exit_code=3) == "Task fails with kernel exit code: 3"
    assert exit_codes.message(14) == "Job has been aborted by user."
    assert "{detail}" in exit_codes.message(52)  # unknown fields are left, not an error


def test_produced_codes_are_the_honest_ones():
    not_produced = {c for c, e in exit_codes.CATALOG.items() if not e.produced}
    assert not_produced == {9, 10, 13, 22, 25, 26, 28}


def test_catalog_json_is_serialisable():
    import json

    data = json.loads(json.dumps(exit_codes.catalog_json()))
    assert {e["code"] for e in data["exit_codes"]} == set(exit_codes.CATALOG)
    assert data["exit_codes"][0]["state"] in ("CANCELED", "EXECUTOR_ERROR", "SYSTEM_ERROR")
