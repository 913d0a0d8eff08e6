"""The job state model (seed 000): states, kinds, allowed transitions, terminal states and UI colours.

Both kinds of job share one set of state names, but each kind has its own transition table:

* **automated** jobs (batch Spark applications) run to completion and can end ``COMPLETE``,
  ``EXECUTOR_ERROR``, ``SYSTEM_ERROR`` or ``CANCELED``;
* **interactive** jobs (cluster sessions) run until they are terminated and end ``COMPLETE`` (after
  ``CANCELING``) or ``SYSTEM_ERROR``. ``EXECUTOR_ERROR`` and ``CANCELED`` are never used for them.

Only three states carry an exit code: ``CANCELED``, ``EXECUTOR_ERROR`` and ``SYSTEM_ERROR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """The two kinds of job."""

    INTERACTIVE = "interactive"
    AUTOMATED = "automated"


class State(StrEnum):
    """Job states, with the exact names of seed 000."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"


S = State

#: Allowed transitions of an automated job. ``INITIALIZING → QUEUED`` is a requeue after a start failure
#: (seed 003 "Start Failed"); ``RUNNING → QUEUED`` is a rerun on a listed exit code.
AUTOMATED_TRANSITIONS: dict[State, frozenset[State]] = {
    S.UNKNOWN: frozenset({S.QUEUED, S.CANCELING, S.SYSTEM_ERROR}),
    S.QUEUED: frozenset({S.INITIALIZING, S.CANCELING, S.SYSTEM_ERROR}),
    S.INITIALIZING: frozenset({S.RUNNING, S.QUEUED, S.CANCELING, S.SYSTEM_ERROR, S.EXECUTOR_ERROR}),
    S.RUNNING: frozenset({S.COMPLETE, S.EXECUTOR_ERROR, S.SYSTEM_ERROR, S.CANCELING, S.QUEUED}),
    S.CANCELING: frozenset({S.CANCELED}),
    S.COMPLETE: frozenset(),
    S.EXECUTOR_ERROR: frozenset(),
    S.SYSTEM_ERROR: frozenset(),
    S.CANCELED: frozenset(),
}

#: Allowed transitions of an interactive job. A terminated cluster goes ``CANCELING → COMPLETE``.
INTERACTIVE_TRANSITIONS: dict[State, frozenset[State]] = {
    S.UNKNOWN: frozenset({S.QUEUED, S.CANCELING, S.SYSTEM_ERROR}),
    S.QUEUED: frozenset({S.INITIALIZING, S.CANCELING, S.SYSTEM_ERROR}),
    S.INITIALIZING: frozenset({S.RUNNING, S.QUEUED, S.CANCELING, S.SYSTEM_ERROR}),
    S.RUNNING: frozenset({S.CANCELING, S.SYSTEM_ERROR}),
    S.CANCELING: frozenset({S.COMPLETE}),
    S.COMPLETE: frozenset(),
    S.SYSTEM_ERROR: frozenset(),
}

TRANSITIONS: dict[Kind, dict[State, frozenset[State]]] = {
    Kind.AUTOMATED: AUTOMATED_TRANSITIONS,
    Kind.INTERACTIVE: INTERACTIVE_TRANSITIONS,
}

#: The states each kind can be in.
STATES: dict[Kind, frozenset[State]] = {kind: frozenset(table) for kind, table in TRANSITIONS.items()}

#: States in which a job never changes again.
TERMINAL: dict[Kind, frozenset[State]] = {
    kind: frozenset(state for state, nxt in table.items() if not nxt) for kind, table in TRANSITIONS.items()
}

#: The states that carry an exit code (and must have one).
EXIT_CODE_STATES: frozenset[State] = frozenset({S.CANCELED, S.EXECUTOR_ERROR, S.SYSTEM_ERROR})

#: States in which ``runtime_status`` may be updated (seed 001).
RUNTIME_STATUS_STATES: frozenset[State] = frozenset({S.INITIALIZING, S.RUNNING})

#: States that hold backend resources (a cluster or a driver may exist).
ACTIVE_STATES: frozenset[State] = frozenset({S.INITIALIZING, S.RUNNING, S.CANCELING})


@dataclass(frozen=True)
class StateStyle:
    """How a state is shown: a short label, a colour name and a hex colour."""

    label: str
    colour: str
    hex: str
    description: str


STYLES: dict[State, StateStyle] = {
    S.UNKNOWN: StateStyle("Unknown", "grey", "#9e9e9e", "Created; no backend instance requested yet."),
    S.QUEUED: StateStyle("Queued", "yellow", "#f9a825", "Waiting for capacity or for backend resources."),
    S.INITIALIZING: StateStyle(
        "Initializing", "blue", "#1e88e5", "Provisioning the cluster, its endpoints or the application."
    ),
    S.RUNNING: StateStyle("Running", "green", "#43a047", "Running; an interactive cluster is ready for use."),
    S.COMPLETE: StateStyle("Complete", "teal", "#00897b", "Finished successfully or terminated cleanly."),
    S.EXECUTOR_ERROR: StateStyle("Executor error", "red", "#e53935", "The Spark application failed."),
    S.SYSTEM_ERROR: StateStyle(
        "System error", "dark red", "#b71c1c", "Something outside the application failed; see the exit code."
    ),
    S.CANCELING: StateStyle("Canceling", "orange", "#fb8c00", "Removing every resource of the job."),
    S.CANCELED: StateStyle("Canceled", "purple", "#8e24aa", "Canceled by the user or automatically."),
}


class IllegalTransition(ValueError):
    """Raised when a transition is not allowed by the lifecycle of the job's kind."""

    def __init__(self, kind: Kind | str, current: State | str, target: State | str, reason: str = "") -> None:
        self.kind = Kind(kind)
        self.current = str(current)
        self.target = str(target)
        allowed = sorted(TRANSITIONS[self.kind].get(State(current), frozenset())) if current in State else []
        msg = reason or (
            f"{self.kind.value} job cannot go from {self.current} to {self.target}"
            f" (allowed from {self.current}: {', '.join(allowed) or 'none, it is terminal'})"
        )
        super().__init__(msg)


def allowed_next(kind: Kind | str, current: State | str) -> frozenset[State]:
    """The states a job of ``kind`` may move to from ``current``."""
    return TRANSITIONS[Kind(kind)].get(State(current), frozenset())


def is_terminal(kind: Kind | str, state: State | str) -> bool:
    """True when ``state`` is terminal for ``kind``."""
    return State(state) in TERMINAL[Kind(kind)]


def check_transition(kind: Kind | str, current: State | str, target: State | str) -> None:
    """Raise :class:`IllegalTransition` unless ``current → target`` is allowed for ``kind``."""
    kind = Kind(kind)
    try:
        cur, tgt = State(current), State(target)
    except ValueError as exc:
        raise IllegalTransition(kind, current, target, f"unknown state: {exc}") from None
    if tgt not in STATES[kind]:
        raise IllegalTransition(
            kind, cur, tgt, f"{kind.value} job cannot go from {cur} to {tgt}: {tgt} is not a state of {kind.value} jobs"
        )
    if tgt not in TRANSITIONS[kind].get(cur, frozenset()):
        raise IllegalTransition(kind, cur, tgt)


def style_catalog() -> dict[str, dict[str, str]]:
    """The per-state label/colour table, as served to the UI."""
    return {
        state.value: {"label": st.label, "colour": st.colour, "hex": st.hex, "description": st.description}
        for state, st in STYLES.items()
    }
