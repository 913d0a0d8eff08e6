"""The live status card of one job (ipywidgets 8), updated from the event stream in a background thread."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

import ipywidgets as w

from sparkdock.notebook.errors import SparkdockError
from sparkdock.notebook.widgets import render


class CardClient(Protocol):
    """What a card needs of the client it is given (a :class:`~sparkdock.notebook.client.Client`)."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def exit_code_info(self, code: int | None) -> dict[str, Any] | None: ...

    def events(self) -> Any: ...


class CardHandle(Protocol):
    """A job handle that owns the card (it forwards events to :meth:`JobCard.update`)."""

    def _update(self, data: dict[str, Any]) -> None: ...


class JobCard(w.VBox):
    """A job's state badge and phase, start-up progress, runtime status, endpoints, failure details and a
    Terminate/Cancel button. :meth:`follow` keeps it live from the client's event stream."""

    def __init__(
        self, client: CardClient, data: dict[str, Any], handle: CardHandle | None = None, **kwargs: Any
    ) -> None:
        self.client = client
        self.handle = handle
        self.data: dict[str, Any] = dict(data)
        self._lock = threading.RLock()
        self._unfollow: Any = None
        self.header = w.HTML()
        self.progress = w.FloatProgress(
            value=0, min=0, max=render.STARTUP_TOTAL, description="", layout=w.Layout(width="60%")
        )
        self.progress_label = w.Label()
        self.progress_box = w.HBox([self.progress, self.progress_label])
        self.status = w.HTML()
        self.jdbc = w.Text(
            description="JDBC URL", layout=w.Layout(width="95%"), style={"description_width": "initial"}
        )
        self.lab = w.HTML()
        self.failure = w.HTML()
        self.message = w.HTML()
        label = "Terminate" if data.get("kind") == "interactive" else "Cancel"
        self.terminate_button = w.Button(description=label, button_style="danger", icon="stop")
        self.terminate_button.on_click(self._on_terminate)
        super().__init__(
            [
                self.header,
                self.progress_box,
                self.status,
                self.jdbc,
                self.lab,
                self.failure,
                w.HBox([self.terminate_button, self.message]),
            ],
            layout=w.Layout(border="1px solid #ddd", padding="6px", margin="4px 0"),
            **kwargs,
        )
        self.update(self.data)

    # -- state
    @property
    def job_id(self) -> str:
        """The job id."""
        return self.data["id"]

    @property
    def state(self) -> str:
        """The state currently shown."""
        return self.data.get("state", "")

    @property
    def phase(self) -> str | None:
        """The phase currently shown."""
        return self.data.get("phase")

    def update(self, data: dict[str, Any]) -> None:
        """Show a newer job JSON (older ones, by ``seq``, are ignored). Safe from any thread."""
        with self._lock:
            old = self.data.get("seq")
            if (
                data.get("seq") is not None
                and old is not None
                and data["seq"] < old
                and data is not self.data
            ):
                return
            self.data = dict(data)
            d = self.data
            interactive = d.get("kind") == "interactive"
            self.header.value = (
                f"{render.badge(d.get('state', ''))} <b>{render.esc(d.get('name') or d['id'])}</b>"
                f" <small>({render.esc(d.get('kind'))} {render.esc(d['id'])})</small>"
                + (
                    f' &middot; <span class="sparkdock-phase">{render.esc(d.get("phase"))}</span>'
                    if d.get("phase")
                    else ""
                )
            )
            if interactive and d.get("state") in ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING"):
                value, label = render.startup_progress(d)
                self.progress.value = value
                self.progress.bar_style = "success" if d["state"] == "RUNNING" else "info"
                self.progress_label.value = f"{label} ({int(value)}/{render.STARTUP_TOTAL})"
                self.progress_box.layout.display = None
            else:
                self.progress_box.layout.display = "none"
            self.status.value = render.runtime_status_html(d)
            jdbc = ((d.get("endpoints") or {}).get("sql") or {}).get("jdbc_url")
            self.jdbc.value = jdbc or ""
            self.jdbc.layout.display = None if jdbc else "none"
            self.lab.value = render.endpoints_html(
                {"endpoints": {k: v for k, v in (d.get("endpoints") or {}).items() if k != "sql"}}
            )
            info = self.client.exit_code_info(d.get("exit_code")) if d.get("exit_code") is not None else None
            self.failure.value = render.failure_html(d, info) or render.ended_html(d)
            terminal = d.get("state") in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
            self.terminate_button.disabled = terminal or d.get("state") == "CANCELING"

    # -- live updates
    def follow(self) -> JobCard:
        """Follow the event stream (idempotent)."""
        if self._unfollow is None:
            self._unfollow = self.client.events().add_listener(self._on_event, self._catch_up)
        return self

    def unfollow(self) -> None:
        """Stop following the event stream."""
        if self._unfollow is not None:
            self._unfollow()
            self._unfollow = None

    def _on_event(self, job: dict[str, Any]) -> None:
        if job.get("id") != self.job_id:
            return
        if self.handle is not None:
            self.handle._update(job)  # the handle updates this card
        else:
            self.update(job)

    def _catch_up(self) -> None:
        with contextlib.suppress(Exception):
            self._on_event(self.client.request("GET", f"jobs/{self.job_id}"))

    def _on_terminate(self, _btn: Any = None) -> None:
        try:
            data = self.client.request("DELETE", f"jobs/{self.job_id}")
            self._on_event(data)
            self.message.value = ""
        except SparkdockError as e:
            self.message.value = f'<span style="color:#b71c1c">{render.esc(e.message)}</span>'

    def close(self) -> None:
        """Stop following and close the widget."""
        self.unfollow()
        super().close()
