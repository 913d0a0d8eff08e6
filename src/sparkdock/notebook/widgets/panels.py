"""The ipywidgets panels: launch and watch clusters, submit automated jobs, monitor every job.

Every panel follows the client's event stream (:class:`sparkdock.notebook.client.EventStream`) in a background
thread: there is no polling loop in the kernel, and updates keep arriving while another cell runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from sparkdock.model.lifecycle import State
from sparkdock.model.specs import SPEC_MAX_WORKER_CORES, SPEC_MAX_WORKERS
from sparkdock.notebook.widgets import render
from sparkdock.notebook.widgets.card import JobCard

if TYPE_CHECKING:
    from sparkdock.notebook.client import Client, Job
    from sparkdock.notebook.errors import InvalidSpec

_ERR_STYLE = "color:#b71c1c;font-size:90%"


class _FieldErrors:
    """Error labels next to form fields, keyed by the server's dotted field names (InvalidSpec.errors)."""

    def __init__(self, fields: dict[str, w.HTML], general: w.HTML) -> None:
        self.fields, self.general = fields, general

    def clear(self) -> None:
        for lbl in (*self.fields.values(), self.general):
            lbl.value = ""

    def _label_for(self, field: str) -> w.HTML:
        best = ""
        for key in self.fields:
            if (field == key or field.startswith(key + ".")) and len(key) > len(best):
                best = key
        return self.fields[best] if best else self.general

    def show(self, errors: list[dict[str, str]], message: str = "") -> None:
        """Show each error next to its field; errors not tied to a known field go to the general label."""
        self.clear()
        if not errors:
            self.general.value = f'<span style="{_ERR_STYLE}">{render.esc(message)}</span>'
            return
        for e in errors:
            field = e.get("field") or ""
            lbl = self._label_for(field)
            text = e.get("message", "") if lbl is not self.general else f"{field}: {e.get('message', '')}"
            span = f'<span style="{_ERR_STYLE}">{render.esc(text)}</span>'
            if span not in lbl.value:  # a form field may make several (the Notify field: one per event)
                lbl.value += ("; " if lbl.value else "") + span


def _row(widget: w.Widget, err: w.HTML) -> w.HBox:
    return w.HBox([widget, err])


def _style() -> dict[str, str]:
    return {"description_width": "130px"}


class _Live(w.VBox):
    """Base: follows the client's event stream until closed."""

    client: Client

    def _follow(self, on_job: Callable[[dict[str, Any]], None], on_connect: Callable[[], None] | None,
                topic: str = "job") -> None:
        if not hasattr(self, "_unfollow"):
            self._unfollow: list[Callable[[], None]] = []
        self._unfollow.append(self.client.events().add_listener(on_job, on_connect, topic=topic))

    def close(self) -> None:
        """Stop following the event stream and close the widget."""
        for unf in getattr(self, "_unfollow", []):
            unf()
        self._unfollow = []
        super().close()


class _ServerDefaults:
    """Form fields prefilled with the server's defaults (``GET sparkdock/api/cluster-options``); a request carries
    only the fields the user changed, so that the server's defaults apply to the others."""

    def __init__(self, client: Client) -> None:
        from sparkdock.notebook.errors import SparkdockError

        self.touched: set[str] = set()
        try:
            self.options: dict[str, dict[str, Any]] = dict(client.cluster_options())
        except SparkdockError:  # the form still works: what is left out gets the server's defaults anyway
            self.options = {}

    def field(self, key: str, widget: w.ValueWidget) -> w.ValueWidget:
        """Show the server's default of ``key`` in ``widget`` and remember when the user changes it."""
        default = self.options.get(key, {}).get("default")
        if default is not None:
            widget.value = default
        widget.observe(lambda _change: self.touched.add(key), names="value")
        return widget

    def given(self, **values: Any) -> dict[str, Any]:
        """The values of the fields the user changed."""
        return {k: v for k, v in values.items() if k in self.touched}

    def note(self) -> str:
        """One line on the server's defaults and bounds, for under the form (empty when unknown)."""
        o = self.options
        if not o:
            return ""
        text = (f"Server defaults: {o['workers']['default']} worker(s) of {o['worker_cores']['default']} core(s) and "
                f"{o['worker_memory']['default']}; at most {o['workers']['max']} workers of "
                f"{o['worker_cores']['max']} cores and {o['worker_memory']['max']}.")
        return f'<span style="color:#555;font-size:90%">{render.esc(text)}</span>'


def _notify_fields(choices: list[tuple[str, str]]) -> tuple[w.Text, w.Dropdown]:
    """The "Notify" field (a webhook URL or an email address) and when to notify."""
    target = w.Text(description="Notify", placeholder="https://... or you@example.org", style=_style(),
                    tooltip="a webhook URL or an email address, told about this job (optional)")
    on = w.Dropdown(options=choices, value=choices[0][1], description="Notify when", style=_style())
    return target, on


def _notifications(target: w.Text, on: w.Dropdown) -> list[dict[str, Any]]:
    """The notifications the form asks for (none when the Notify field is empty)."""
    from sparkdock.notebook.client import notify

    value = target.value.strip()
    return notify(value, on.value.split(",")) if value else []


# ---- ClusterPanel --------------------------------------------------------------------------------------
class ClusterPanel(_Live):
    """A launch form for interactive clusters and a live card per interactive job."""

    def __init__(self, client: Client, show_ended: int = 5, **kwargs: Any) -> None:
        self.client = client
        self.show_ended = show_ended
        self._lock = threading.RLock()
        self.cards: dict[str, JobCard] = {}
        st = _style()
        self.name = w.Text(description="Name", placeholder="my-cluster", style=st)
        self.defaults = _ServerDefaults(client)
        self.workers = self.defaults.field("workers", w.BoundedIntText(
            value=1, min=1, max=SPEC_MAX_WORKERS, description="Workers", style=st))
        self.worker_cores = self.defaults.field("worker_cores", w.BoundedIntText(
            value=1, min=1, max=SPEC_MAX_WORKER_CORES, description="Cores / worker", style=st))
        self.worker_memory = self.defaults.field("worker_memory", w.Text(
            value="1g", description="Memory / worker", style=st))
        self.idle_timeout = w.BoundedFloatText(
            value=0,
            min=0,
            max=30 * 24 * 3600,
            description="Idle timeout (s)",
            style=st,
            tooltip="0: the server's default",
        )
        self.notify, self.notify_on = _notify_fields([
            ("it is ready or fails", "ready,failure"), ("it ends", "end"), ("it fails", "failure"),
            ("its state changes", "change")])
        self.launch_button = w.Button(description="Launch cluster", button_style="primary", icon="rocket")
        self.launch_button.on_click(lambda _b: self.launch())
        errs = {
            k: w.HTML()
            for k in (
                "name",
                "cluster.workers",
                "cluster.worker_cores",
                "cluster.worker_memory",
                "cluster.idle_timeout",
                "notifications",
            )
        }
        self.general_error = w.HTML()
        self.errors = _FieldErrors(errs, self.general_error)
        self.form = w.VBox(
            [
                _row(self.name, errs["name"]),
                _row(self.workers, errs["cluster.workers"]),
                _row(self.worker_cores, errs["cluster.worker_cores"]),
                _row(self.worker_memory, errs["cluster.worker_memory"]),
                _row(self.idle_timeout, errs["cluster.idle_timeout"]),
                _row(w.HBox([self.notify, self.notify_on]), errs["notifications"]),
                w.HTML(self.defaults.note()),
                w.HBox([self.launch_button, self.general_error]),
            ]
        )
        self.cards_box = w.VBox()
        super().__init__([w.HTML("<b>Interactive Spark clusters</b>"), self.form, self.cards_box], **kwargs)
        self._follow(self._on_job, self._reload)
        self._reload()

    def _reload(self) -> None:
        try:
            jobs = self.client.request("GET", "jobs", params={"kind": "interactive", "limit": 50})["jobs"]
        except Exception:
            return
        ended = 0
        for j in reversed(jobs):  # oldest first, so that the newest ends up on top
            terminal = j["state"] in ("COMPLETE", "SYSTEM_ERROR")
            if terminal and j["id"] not in self.cards:
                ended += 1
                if ended > self.show_ended:
                    continue
            self._on_job(j)

    def _on_job(self, job: dict[str, Any]) -> None:
        if job.get("kind") != "interactive":
            return
        with self._lock:
            card = self.cards.get(job["id"])
            if card is None:
                card = JobCard(self.client, job)
                self.cards[job["id"]] = card
                self.cards_box.children = (card, *self.cards_box.children)
            else:
                card.update(job)

    def launch(self) -> Job | None:
        """Launch a cluster from the form; field errors are shown next to the fields. The size fields the user
        did not change are left out: the server's defaults apply."""
        from sparkdock.notebook.errors import InvalidSpec, SparkdockError

        self.errors.clear()
        try:
            job = self.client.launch_cluster(
                name=self.name.value.strip(),
                **self.defaults.given(workers=self.workers.value, worker_cores=self.worker_cores.value,
                                      worker_memory=self.worker_memory.value.strip()),
                idle_timeout=self.idle_timeout.value or None,
                notifications=_notifications(self.notify, self.notify_on),
            )
        except InvalidSpec as e:
            self.errors.show(e.errors, e.message)
            return None
        except SparkdockError as e:
            self.errors.show([], e.message)
            return None
        self._on_job(job.data)
        return job


# ---- JobSubmitPanel ------------------------------------------------------------------------------------
EPHEMERAL = "__ephemeral__"


class JobSubmitPanel(_Live):
    """A form for automated jobs: type, code or path, target cluster, conf, policy."""

    def __init__(self, client: Client, **kwargs: Any) -> None:
        self.client = client
        self._clusters: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        st = _style()
        self.name = w.Text(description="Name", style=st)
        self.type = w.Dropdown(options=["pyspark", "sql"], value="pyspark", description="Type", style=st)
        self.code = w.Textarea(
            description="Code",
            placeholder="PySpark code or SQL script",
            style=st,
            layout=w.Layout(width="70%", height="120px"),
        )
        self.path = w.Text(description="or path", placeholder="/path/on/the/server.py", style=st)
        self.target = w.Dropdown(
            options=[("new ephemeral cluster", EPHEMERAL)], value=EPHEMERAL, description="Run on", style=st
        )
        self.defaults = _ServerDefaults(client)
        self.workers = self.defaults.field("workers", w.BoundedIntText(
            value=1, min=1, max=SPEC_MAX_WORKERS, description="Ephemeral workers", style=st))
        self.conf = w.Textarea(
            description="Spark conf",
            placeholder="spark.executor.memory=512m",
            style=st,
            layout=w.Layout(width="70%", height="60px"),
        )
        self.max_runtime = w.BoundedFloatText(
            value=0, min=0, max=30 * 24 * 3600, description="Max runtime (s)", style=st
        )
        self.retries = w.BoundedIntText(value=0, min=0, max=100, description="Start retries", style=st)
        self.notify, self.notify_on = _notify_fields([
            ("it ends", "end"), ("it fails", "failure"), ("its state changes", "change")])
        self.submit_button = w.Button(description="Submit job", button_style="primary", icon="play")
        self.submit_button.on_click(lambda _b: self.submit())
        keys = (
            "name",
            "application.type",
            "application.code",
            "application.path",
            "cluster_job",
            "cluster",
            "application.conf",
            "policy.max_runtime",
            "policy.retries",
            "notifications",
        )
        errs = {k: w.HTML() for k in keys}
        errs["application"] = errs["application.code"]  # "exactly one of code/path" goes next to the code
        self.general_error = w.HTML()
        self.errors = _FieldErrors(errs, self.general_error)
        self.result = w.VBox()
        super().__init__(
            [
                w.HTML("<b>Submit an automated job</b>"),
                _row(self.name, errs["name"]),
                _row(self.type, errs["application.type"]),
                _row(self.code, errs["application.code"]),
                _row(self.path, errs["application.path"]),
                _row(self.target, errs["cluster_job"]),
                _row(self.workers, errs["cluster"]),
                _row(self.conf, errs["application.conf"]),
                _row(self.max_runtime, errs["policy.max_runtime"]),
                _row(self.retries, errs["policy.retries"]),
                _row(w.HBox([self.notify, self.notify_on]), errs["notifications"]),
                w.HBox([self.submit_button, self.general_error]),
                self.result,
            ],
            **kwargs,
        )
        self._follow(self._on_job, self._reload)
        self._reload()

    def _reload(self) -> None:
        try:
            jobs = self.client.request("GET", "jobs", params={"kind": "interactive", "state": "RUNNING"})[
                "jobs"
            ]
        except Exception:
            return
        with self._lock:
            self._clusters = {j["id"]: j for j in jobs}
        self._refresh_targets()

    def _on_job(self, job: dict[str, Any]) -> None:
        if job.get("kind") != "interactive":
            return
        with self._lock:
            was = job["id"] in self._clusters
            if job.get("state") == "RUNNING" and not (job.get("runtime_status") or {}).get("error"):
                self._clusters[job["id"]] = job
            else:
                self._clusters.pop(job["id"], None)
            if was != (job["id"] in self._clusters):
                self._refresh_targets()

    def _refresh_targets(self) -> None:
        with self._lock:
            opts = [("new ephemeral cluster", EPHEMERAL)] + [
                (f"{j.get('name') or j['id']} ({j['id']})", j["id"]) for j in self._clusters.values()
            ]
            current = self.target.value
            self.target.options = opts
            self.target.value = current if current in {v for _, v in opts} else EPHEMERAL

    @staticmethod
    def parse_conf(text: str) -> tuple[dict[str, str], list[str]]:
        """``key=value`` lines (blank lines and ``#`` comments ignored) → (conf, errors)."""
        conf: dict[str, str] = {}
        errors = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, val = line.partition("=")
            if not sep or not key.strip():
                errors.append(f"line {n}: expected key=value, got {line!r}")
                continue
            conf[key.strip()] = val.strip()
        return conf, errors

    def submit(self) -> Job | None:
        """Submit the form; field errors (the server's messages) are shown next to the fields."""
        from sparkdock.notebook.errors import Conflict, InvalidSpec, SparkdockError

        self.errors.clear()
        conf, conf_errors = self.parse_conf(self.conf.value)
        if conf_errors:
            self.errors.show([{"field": "application.conf", "message": "; ".join(conf_errors)}])
            return None
        target = self.target.value
        policy: dict[str, Any] = {"retries": self.retries.value}
        if self.max_runtime.value:
            policy["max_runtime"] = self.max_runtime.value
        try:
            job = self.client.submit(
                code=self.code.value if self.code.value.strip() else None,
                path=self.path.value.strip() or None,
                type=self.type.value,
                name=self.name.value.strip(),
                conf=conf,
                cluster=(self.defaults.given(workers=self.workers.value) or None) if target == EPHEMERAL else None,
                cluster_job=None if target == EPHEMERAL else target,
                policy=policy,
                notifications=_notifications(self.notify, self.notify_on),
            )
        except InvalidSpec as e:
            self._show_invalid(e)
            return None
        except Conflict as e:
            self.errors.show([{"field": "cluster_job", "message": e.message}])
            return None
        except SparkdockError as e:
            self.errors.show([], e.message)
            return None
        card = job.widget() if hasattr(job, "widget") else JobCard(self.client, job.data).follow()
        self.result.children = (card,)
        return job

    def _show_invalid(self, e: InvalidSpec) -> None:
        self.errors.show(e.errors, e.message)


# ---- JobMonitor ----------------------------------------------------------------------------------------
class JobMonitor(_Live):
    """A live table of every job, filterable by kind and state; the selected job's card (with Cancel),
    history timeline, notifications (every attempt of its webhooks and emails, live), logs per component, and
    for a failed job the catalog's description and action."""

    def __init__(self, client: Client, limit: int = 200, **kwargs: Any) -> None:
        self.client = client
        self.limit = limit
        self.jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.kind_filter = w.Dropdown(
            options=[("all kinds", ""), ("interactive", "interactive"), ("automated", "automated")],
            value="",
            description="Kind",
        )
        self.state_filter = w.Dropdown(
            options=[("all states", "")] + [(s.value, s.value) for s in State], value="", description="State"
        )
        self.table = w.HTML()
        self.selector = w.Dropdown(
            options=[("(select a job)", "")], value="", description="Job", layout=w.Layout(width="60%")
        )
        self.detail = w.VBox()
        self.history = w.HTML()
        self.notifications = w.HTML()
        self.component = w.Dropdown(options=["driver"], description="Component")
        self.tail = w.BoundedIntText(value=200, min=1, max=100_000, description="Tail")
        self.logs_button = w.Button(description="Show logs", icon="file-text")
        self.logs = w.Textarea(layout=w.Layout(width="95%", height="200px"), disabled=True)
        self.card: JobCard | None = None
        for f in (self.kind_filter, self.state_filter):
            f.observe(lambda _c: self._render(), names="value")
        self.selector.observe(lambda c: self.select(c["new"]), names="value")
        self.component.observe(lambda _c: self.show_logs(), names="value")
        self.logs_button.on_click(lambda _b: self.show_logs())
        self.card_box = w.VBox()
        self.detail.children = (
            self.card_box,
            w.HTML("<b>History</b>"),
            self.history,
            w.HTML("<b>Notifications</b>"),
            self.notifications,
            w.HBox([self.component, self.tail, self.logs_button]),
            self.logs,
        )
        super().__init__(
            [
                w.HTML("<b>Jobs</b>"),
                w.HBox([self.kind_filter, self.state_filter]),
                self.table,
                self.selector,
                self.detail,
            ],
            **kwargs,
        )
        self._follow(self._on_job, self._reload)
        self._follow(self._on_delivery, None, topic="delivery")
        self._reload()

    @property
    def selected(self) -> str | None:
        """The selected job id."""
        return self.selector.value or None

    def visible_jobs(self) -> list[dict[str, Any]]:
        """The jobs the filters let through, newest first."""
        kind, state = self.kind_filter.value, self.state_filter.value
        with self._lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.get("created_at") or "", reverse=True)
        return [
            j for j in jobs if (not kind or j.get("kind") == kind) and (not state or j.get("state") == state)
        ]

    def _reload(self) -> None:
        try:
            jobs = self.client.request("GET", "jobs", params={"limit": self.limit})["jobs"]
        except Exception:
            return
        with self._lock:
            for j in jobs:
                self.jobs[j["id"]] = j
        self._render()
        if self.selected:
            self._refresh_detail()

    def _on_job(self, job: dict[str, Any]) -> None:
        with self._lock:
            old = self.jobs.get(job["id"])
            if old is not None and job.get("seq") is not None and (old.get("seq") or 0) > job["seq"]:
                return
            self.jobs[job["id"]] = job
        self._render()
        if job["id"] == self.selected and (
            old is None or old.get("state") != job.get("state") or old.get("phase") != job.get("phase")
        ):
            self._refresh_history()
            if old is None or old.get("state") != job.get("state"):  # it may have planned notifications
                self._refresh_notifications()

    def _on_delivery(self, delivery: dict[str, Any]) -> None:
        if delivery.get("job_id") == self.selected:
            self._refresh_notifications()

    def _render(self) -> None:
        jobs = self.visible_jobs()
        self.table.value = render.jobs_table_html(jobs, self.selected)
        opts = [("(select a job)", "")] + [
            (f"{j['id']}  {j.get('name') or ''}  {j['state']}", j["id"]) for j in jobs
        ]
        with self._lock:
            sel = self.selected
            if sel and sel not in {v for _, v in opts}:
                j = self.jobs.get(sel)
                if j:
                    opts.append((f"{sel}  {j.get('name') or ''}  {j['state']}", sel))
            if list(self.selector.options) != opts:
                self.selector.options = opts
                self.selector.value = sel or ""

    def select(self, job_id: str | None) -> None:
        """Show one job's card, history, notifications and logs (a job submitted a moment ago, which the event
        stream has not brought yet, is fetched)."""
        if job_id and job_id not in self.jobs:
            self._on_job(self.client.request("GET", f"jobs/{job_id}"))  # raises NotFound for an unknown id
        if (job_id or "") != self.selector.value:
            self.selector.value = job_id or ""
            return
        if self.card is not None:
            self.card.unfollow()
            self.card = None
        if not job_id:
            self.card_box.children = ()
            self.history.value = ""
            self.notifications.value = ""
            self.logs.value = ""
            return
        self._refresh_detail()

    def _refresh_detail(self) -> None:
        job_id = self.selected
        if not job_id:
            return
        job = self.jobs.get(job_id)
        if job is None:
            return
        if self.card is None or self.card.job_id != job_id:
            self.card = JobCard(self.client, job).follow()
            self.card_box.children = (self.card,)
        if job.get("kind") == "automated":
            comps = ["driver"]
        else:
            n = int(((job.get("spec") or {}).get("cluster") or {}).get("workers") or 1)
            comps = ["master", *[f"worker-{k}" for k in range(1, n + 1)], "sql", "lab"]
        if list(self.component.options) != comps:
            self.component.options = comps
        self._refresh_history()
        self._refresh_notifications()
        self._render()
        self.show_logs()

    def _refresh_history(self) -> None:
        self._refresh(self.history, "history", "events", render.history_html)

    def _refresh_notifications(self) -> None:
        self._refresh(self.notifications, "notifications", "deliveries", render.deliveries_html)

    def _refresh(self, view: w.HTML, part: str, key: str, show: Callable[[list[dict[str, Any]]], str]) -> None:
        """Fetch ``jobs/<selected>/<part>`` and show its ``key`` list in ``view`` (unless another job was
        selected meanwhile)."""
        job_id = self.selected
        if not job_id:
            return
        try:
            items = self.client.request("GET", f"jobs/{job_id}/{part}")[key]
        except Exception as e:
            view.value = f'<span style="{_ERR_STYLE}">{render.esc(e)}</span>'
            return
        if job_id == self.selected:
            view.value = show(items)

    def show_logs(self) -> None:
        """Fetch and show the selected component's logs."""
        job_id = self.selected
        if not job_id or not self.component.value:
            return
        try:
            self.logs.value = self.client.request(
                "GET",
                f"jobs/{job_id}/logs",
                params={"component": self.component.value, "tail": self.tail.value},
            )["logs"]
        except Exception as e:
            self.logs.value = f"(no logs: {getattr(e, 'message', e)})"

    def cancel_selected(self) -> None:
        """Cancel (or terminate) the selected job."""
        if self.card is not None:
            self.card._on_terminate()
