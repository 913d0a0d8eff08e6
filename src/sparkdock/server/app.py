"""The ``sparkdock`` Jupyter server extension (``ExtensionApp``) and its traitlets configuration."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Set, Type, Unicode, default, validate

from sparkdock._version import __version__
from sparkdock.backends.base import Backend
from sparkdock.backends.logfiles import DEFAULT_MAX_JOB_BYTES, LogPolicy
from sparkdock.backends.provisioning import Deadlines
from sparkdock.model.specs import SpecError, parse_notifications, parse_size
from sparkdock.server.data_dir import UnsafePermissions, prepare_data_dir, prepare_store_file
from sparkdock.server.events import EventBus
from sparkdock.server.limits import Limits
from sparkdock.server.manager import JobManager, ManagerConfig, data_dir_default
from sparkdock.server.owners import OwnerPolicy
from sparkdock.server.store import JobStore
from sparkdock.server.webhooks.dispatcher import STANDARD_SCHEDULE, DeliveryPolicy
from sparkdock.server.webhooks.mailer import TLS_MODES, USER_ENV, SmtpSettings, read_password
from sparkdock.server.webhooks.planner import NotificationPlanner


def exposure_warning(bind_address: str) -> str | None:
    """What a ``bind_address`` other than loopback exposes, or ``None`` for a loopback one."""
    try:
        if ipaddress.ip_address(bind_address or "0.0.0.0").is_loopback:
            return None
    except ValueError:
        if bind_address == "localhost":
            return None
    return (f"bind_address={bind_address!r} is not loopback: every cluster's SQL endpoint (password), lab (token) "
            "and Spark UIs (read-only, no login) are published on it, to whoever can reach this host on that "
            "address. Keep 127.0.0.1 unless a firewall or a private network stands in front.")


class SparkDockApp(ExtensionApp):
    """Interactive Spark clusters and automated Spark jobs for Jupyter."""

    name = "sparkdock"
    extension_url = "/sparkdock/api/jobs"
    load_other_extensions = True

    backend = Unicode(
        "auto",
        config=True,
        help="Cluster backend: 'docker' (containers), 'local' (processes from the installed pyspark), or "
        "'auto' (Docker when an engine answers and the image exists, else local).",
    )
    backend_class = Type(
        None,
        klass=Backend,
        allow_none=True,
        config=True,
        help="A Backend subclass to use instead of the built-in ones (overrides 'backend'). It is constructed "
        "as cls(data_dir, instance).",
    )
    data_dir = Unicode(
        "", config=True, help="Folder for the job store, per-job logs and staged applications "
        "(default: <jupyter data dir>/sparkdock)."
    )
    cache_dir = Unicode(
        "", config=True,
        help="Folder of what sparkdock builds once and reuses (the local backend's SQL authenticator jar), "
        "keyed by content; several servers may share one (default: <data_dir>/cache).",
    )
    store_path = Unicode("", config=True, help="Path of the SQLite job store (default: <data_dir>/jobs.db).")
    instance = Unicode(
        "", config=True, help="Id of this installation, put on every container/process it creates so that two "
        "installations never touch each other's clusters (default: derived from the data dir)."
    )
    image = Unicode(
        f"sparkdock/spark:{__version__}", config=True, help="Container image of every role (Docker backend)."
    )
    bind_address = Unicode(
        "127.0.0.1", config=True, help="Host address on which the SQL, lab and Spark UI ports are published."
    )
    docker_host = Unicode("", config=True, help="Docker engine URL (default: DOCKER_HOST or the local socket).")
    default_workers = Int(1, config=True, help="Workers of a cluster when the request does not say.")
    default_worker_cores = Int(1, config=True, help="Cores per worker when the request does not say.")
    default_worker_memory = Unicode("1g", config=True, help="Memory per worker when the request does not say.")
    max_running_clusters = Int(
        2, config=True, help="Clusters (interactive, or ephemeral for automated jobs) that may run at once; "
        "further jobs wait in QUEUED and start in order."
    )
    max_queued_jobs = Int(50, config=True, help="Jobs that may wait in QUEUED; beyond it, submissions fail (23).")
    default_idle_timeout = Float(
        0, config=True, help="Idle timeout (s) of interactive clusters that do not set one; 0 = none."
    )
    default_max_lifetime = Float(
        0, config=True, help="Max lifetime (s) of interactive clusters that do not set one; 0 = none."
    )
    start_timeout = Float(300, config=True, help="Seconds a cluster's master and workers may take to come up.")
    endpoint_timeout = Float(300, config=True, help="Seconds the SQL and lab endpoints may take to answer.")
    sql_row_limit = Int(1000, config=True, help="Most rows returned by POST .../sql (the cap is stated).")
    terminate_on_shutdown = Bool(
        False, config=True, help="Terminate every cluster when the server stops (by default they keep "
        "running: they are the user's, and are adopted at the next start)."
    )
    retry_backoff = Float(2.0, config=True, help="First delay (s) of start retries; it doubles per attempt.")
    enforce_owners = CaselessStrEnum(
        ["auto", "on", "off"], "auto", config=True,
        help="Whether each user sees and acts on their own jobs only. 'auto': when the identity provider gives "
        "stable user names (JupyterHub's, or a configured IdentityProvider), not under jupyter_server's own "
        "token or password login, where every caller is the one owner 'default'.",
    )
    allowed_images = Set(
        Unicode(), config=True,
        help="Images a cluster request may name (cluster.image); any other is refused with 400. Default: the "
        "configured 'image' only.",
    )
    max_workers = Int(8, config=True, help="Most workers a cluster may have; a request over it is refused (400).")
    max_worker_cores = Int(
        8, config=True, help="Most cores a worker may have; a request over it is refused (400). On Docker each "
        "worker's container is limited to that many CPUs (nano_cpus)."
    )
    max_worker_memory = Unicode(
        "16g", config=True, help="Most memory a worker may have (a size like '16g'); a request over it is "
        "refused (400)."
    )
    max_drivers_per_cluster = Int(
        2, config=True, help="Automated jobs that may run at once on one interactive cluster (cluster_job); "
        "further ones wait in QUEUED (phase WaitingForDriverSlot) and start in order."
    )
    health_interval = Float(
        2.0, config=True, help="Seconds between two health checks of each running cluster (its containers or "
        "processes, and probes of its master, SQL endpoint and lab). A dead worker gives runtime_status.warning; "
        "a dead master, SQL endpoint or last worker gives runtime_status.error."
    )
    health_grace = Float(
        20.0, config=True, help="Seconds a running cluster's master or SQL endpoint may stay down before the job "
        "ends in SYSTEM_ERROR with exit code 50 (its cluster removed, its capacity slot freed)."
    )
    health_probe_failures = Int(
        3, config=True, help="Health checks in a row an endpoint that is alive must fail to answer before it "
        "counts as down (one slow answer of a busy machine flags nothing)."
    )
    history_retention_days = Float(
        30.0, config=True, help="Days a finished job is kept: then its history, logs and folder are deleted (checked "
        "at start-up and every hour). Jobs that have not ended are never pruned. 0 keeps every job forever."
    )
    max_log_bytes_per_job = Unicode(
        f"{DEFAULT_MAX_JOB_BYTES // 2**20}m", config=True,
        help="Cap of one job's logs, all components together (a size like '256m'). Each "
        "component's log is rotated at 1/16 of it (driver.log, then driver.log.1, ...) and the oldest rotated "
        "parts are deleted to stay under the cap; the newest lines are always kept."
    )
    event_queue_size = Int(
        1000, config=True, help="Job changes kept for one event WebSocket client (WS sparkdock/api/events) that "
        "has not read them yet. A client that falls further behind is disconnected with close code 4008 "
        "(too slow) and resynchronises: the Python client reconnects and reloads the jobs it shows. This bounds "
        "the server's memory per client.",
    )
    public_url = Unicode(
        "", config=True, help="The URL at which users reach this Jupyter server, for the links that notifications "
        "carry (${JOB_URL}, ${JOB_ARCHIVE_URL}); default: the server's own URL (ServerApp.connection_url).",
    )
    default_notifications = List(
        Dict(), config=True,
        help="Notifications added to every job, as in a job's 'notifications': [{'url': 'https://...', 'event': "
        "'SYSTEM_ERROR' or '*' or a state, 'persistent': false}]. Their URLs are not shown to the jobs' owners "
        "(only their origin).",
    )
    webhook_retry_schedule = List(
        default_value=list(STANDARD_SCHEDULE), config=True,
        help="Seconds (numbers) between the attempts of a webhook that failed with a 5xx, a 429, a timeout or a "
        "network error (Standard Webhooks' schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); a webhook is tried at "
        "most once more than the list is long, then it is marked failed.",
    )
    webhook_retry_jitter = Float(
        0.2, config=True, help="Each retry delay is multiplied by a random factor in [1 - jitter, 1 + jitter], so "
        "that many webhooks that failed together do not all come back at once (0 to 0.9).",
    )
    webhook_timeout = Float(
        10.0, config=True, help="Seconds a webhook's receiver has to accept the connection, and to answer "
        "(0.1 to 60); a timeout is retried.",
    )
    webhook_allowed_networks = List(
        Unicode(), config=True,
        help="Networks (CIDR, e.g. '10.0.0.0/8' or '127.0.0.1/32') that webhooks may reach although they are not "
        "public. By default only public addresses are: loopback, link-local, private, shared, multicast, reserved "
        "and cloud metadata addresses are refused (the guard against server-side request forgery).",
    )
    webhook_secret_grace = Float(
        24 * 3600.0, config=True, help="Seconds a rotated-out webhook signing secret keeps signing next to the "
        "new one (receivers switch in that time).",
    )
    smtp_host = Unicode(
        "", config=True, help="The SMTP server that sends email notifications (a notification whose url is an email "
        "address). Empty: email notifications are refused (400).",
    )
    smtp_port = Int(587, config=True, help="The SMTP server's port (587 for STARTTLS, 465 for implicit TLS).")
    smtp_tls = Unicode(
        "starttls", config=True, help="How the SMTP session is protected: 'starttls' (upgrade the connection), "
        "'tls' (implicit TLS) or 'none' (only without credentials, e.g. a relay on the same host). The server's "
        "certificate is verified.",
    )
    smtp_user = Unicode(
        config=True, help="The SMTP login's user (default: $SPARKDOCK_SMTP_USER; empty: no login).",
    )
    smtp_password_file = Unicode(
        "", config=True, help="A file holding the SMTP login's password (default: $SPARKDOCK_SMTP_PASSWORD). The "
        "password is never a setting of its own: a setting can end up on a command line.",
    )
    smtp_from = Unicode(config=True, help="The From address of email notifications (default: sparkdock@<host>).")
    smtp_timeout = Float(30.0, config=True, help="Seconds the SMTP server has to answer each step (1 to 300); a "
                         "timeout is retried on webhook_retry_schedule.")
    smtp_ca_file = Unicode(
        "", config=True, help="CA certificates (PEM) that verify the SMTP server's certificate (default: the "
        "system's).",
    )
    admin_users = Set(
        Unicode(), config=True,
        help="Users who see and act on every job when owners are enforced (default: under JupyterHub, the "
        "server's owner). A user the Authorizer allows on 'sparkdock:admin' is an admin too.",
    )

    @default("admin_users")
    def _default_admin_users(self) -> set[str]:
        owner = os.environ.get("JUPYTERHUB_USER")
        return {owner} if owner else set()

    @default("smtp_user")
    def _default_smtp_user(self) -> str:
        return os.environ.get(USER_ENV, "")

    @default("smtp_from")
    def _default_smtp_from(self) -> str:
        return f"sparkdock@{socket.gethostname()}"

    @validate("smtp_port")
    def _valid_port(self, proposal: Any) -> int:
        if not 1 <= int(proposal["value"]) <= 65535:
            raise ValueError(f"SparkDockApp.smtp_port must be a port (1 to 65535), not {proposal['value']!r}")
        return int(proposal["value"])

    @validate("smtp_tls")
    def _valid_tls(self, proposal: Any) -> str:
        value = str(proposal["value"]).lower()
        if value not in TLS_MODES:
            raise ValueError(f"SparkDockApp.smtp_tls must be one of {', '.join(TLS_MODES)}, not {value!r}")
        return value

    @validate("smtp_timeout")
    def _valid_smtp_timeout(self, proposal: Any) -> float:
        if not 1 <= float(proposal["value"]) <= 300:
            raise ValueError("SparkDockApp.smtp_timeout must be between 1 and 300 seconds")
        return float(proposal["value"])

    @default("allowed_images")
    def _default_allowed_images(self) -> set[str]:
        return {self.image}

    @validate("health_interval", "health_grace")
    def _positive_seconds(self, proposal: Any) -> float:
        if float(proposal["value"]) <= 0:
            raise ValueError(f"SparkDockApp.{proposal['trait'].name} must be a positive number of seconds")
        return float(proposal["value"])

    @validate("max_workers", "max_worker_cores", "max_drivers_per_cluster", "health_probe_failures",
              "event_queue_size")
    def _at_least_one(self, proposal: Any) -> int:
        if int(proposal["value"]) < 1:
            raise ValueError(f"SparkDockApp.{proposal['trait'].name} must be at least 1")
        return int(proposal["value"])

    @validate("webhook_retry_schedule")
    def _valid_schedule(self, proposal: Any) -> list[float]:
        try:  # numbers from a config file; strings from the command line (each --...=N adds one)
            value = [float(v) for v in proposal["value"]]
        except (TypeError, ValueError):
            value = []
        if (not value and proposal["value"]) or len(value) > 20 or any(not 0 < v <= 7 * 24 * 3600 for v in value):
            raise ValueError("SparkDockApp.webhook_retry_schedule must be at most 20 delays, each more than 0 and "
                             f"at most 7 days (604800 s), not {proposal['value']!r}")
        return value

    @validate("webhook_retry_jitter")
    def _valid_jitter(self, proposal: Any) -> float:
        if not 0 <= float(proposal["value"]) <= 0.9:
            raise ValueError("SparkDockApp.webhook_retry_jitter must be between 0 and 0.9")
        return float(proposal["value"])

    @validate("webhook_timeout")
    def _valid_webhook_timeout(self, proposal: Any) -> float:
        if not 0.1 <= float(proposal["value"]) <= 60:
            raise ValueError("SparkDockApp.webhook_timeout must be between 0.1 and 60 seconds")
        return float(proposal["value"])

    @validate("webhook_secret_grace")
    def _valid_grace(self, proposal: Any) -> float:
        if float(proposal["value"]) < 0:
            raise ValueError("SparkDockApp.webhook_secret_grace must be 0 or more seconds")
        return float(proposal["value"])

    @validate("webhook_allowed_networks")
    def _valid_networks(self, proposal: Any) -> list[str]:
        for net in proposal["value"]:
            try:
                ipaddress.ip_network(str(net), strict=False)
            except ValueError:
                raise ValueError("SparkDockApp.webhook_allowed_networks must hold networks like '10.0.0.0/8' or "
                                 f"'127.0.0.1/32', not {net!r}") from None
        return [str(n) for n in proposal["value"]]

    @validate("history_retention_days")
    def _not_negative(self, proposal: Any) -> float:
        if float(proposal["value"]) < 0:
            raise ValueError("SparkDockApp.history_retention_days must be 0 (keep forever) or more")
        return float(proposal["value"])

    @validate("max_log_bytes_per_job")
    def _valid_log_cap(self, proposal: Any) -> str:
        try:
            size = parse_size(str(proposal["value"]))
        except ValueError:
            size = -1
        if size < 1024 * 1024:
            raise ValueError("SparkDockApp.max_log_bytes_per_job must be a size of at least '1m', like '256m', "
                             f"not {proposal['value']!r}")
        return str(proposal["value"])

    @validate("max_worker_memory")
    def _valid_memory(self, proposal: Any) -> str:
        try:
            parse_size(str(proposal["value"]))
        except ValueError:
            value = proposal["value"]
            raise ValueError(f"SparkDockApp.max_worker_memory must be a size like '16g', not {value!r}") from None
        return str(proposal["value"])

    @validate("backend")
    def _valid_backend(self, proposal: Any) -> str:
        value = str(proposal["value"]).lower()
        if value not in ("auto", "docker", "local"):
            raise ValueError(f"SparkDockApp.backend must be auto, docker or local, not {value!r}")
        return value

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(data_dir_default())

    def _instance_id(self) -> str:
        if self.instance:
            return self.instance
        return hashlib.sha256(str(Path(self.data_dir).resolve()).encode()).hexdigest()[:8]

    def _deadlines(self) -> Deadlines:
        return Deadlines(start=self.start_timeout, sql=self.endpoint_timeout, lab=self.endpoint_timeout)

    def _make_backend(self, data_dir: Path, instance: str) -> tuple[Backend, str]:
        if self.backend_class is not None:
            return self.backend_class(data_dir, instance), f"configured backend_class={self.backend_class.__name__}"
        choice = self.backend
        reason = f"configured backend={choice}"
        if choice == "auto":
            from sparkdock.backends.select import docker_usable

            ok, why = docker_usable(self.image, self.docker_host or None)
            choice = "docker" if ok else "local"
            reason = f"auto: {why}"
        if choice == "docker":
            from sparkdock.backends.docker import DockerBackend

            be: Backend = DockerBackend(
                data_dir, instance, image=self.image, bind_address=self.bind_address,
                docker_host=self.docker_host or None, deadlines=self._deadlines(),
            )
        else:
            from sparkdock.backends.local import LocalBackend

            be = LocalBackend(
                data_dir, instance, deadlines=self._deadlines(),
                cache_dir=self.cache_dir or None,
            )
        return be, reason

    def initialize_settings(self) -> None:
        """Create the store, the backend, the event bus and the manager."""
        data_dir = Path(self.data_dir)
        store_path = Path(self.store_path or data_dir / "jobs.db")
        try:
            prepare_data_dir(data_dir)
            prepare_store_file(store_path)
        except UnsafePermissions as exc:  # refuse to start: a clear message, no traceback
            self.log.critical("sparkdock cannot start: %s", exc)
            raise SystemExit(f"sparkdock cannot start: {exc}") from None
        try:
            defaults = parse_notifications(self.default_notifications, "SparkDockApp.default_notifications")
            smtp = self._smtp_settings()
            if not smtp.enabled and any(n.email for n in defaults):
                raise ValueError("SparkDockApp.default_notifications sends email, but no SMTP server is set "
                                 "(SparkDockApp.smtp_host)")
        except (SpecError, ValueError) as exc:
            self.log.critical("sparkdock cannot start: %s", exc)
            raise SystemExit(f"sparkdock cannot start: {exc}") from None
        store = JobStore(store_path)
        store.planner = NotificationPlanner(defaults, self._public_url)
        backend, reason = self._make_backend(data_dir, self._instance_id())
        backend.log_policy = LogPolicy(parse_size(self.max_log_bytes_per_job))
        self.log.info("sparkdock: %s backend (%s); data in %s", backend.name, reason, data_dir)
        warning = exposure_warning(self.bind_address)
        if warning:  # said whatever the backend: it is what this configuration asks for
            self.log.warning("sparkdock: %s", warning)
        config = ManagerConfig(
            max_running_clusters=self.max_running_clusters,
            max_queued_jobs=self.max_queued_jobs,
            default_cluster={
                "workers": self.default_workers,
                "worker_cores": self.default_worker_cores,
                "worker_memory": self.default_worker_memory,
            },
            default_idle_timeout=self.default_idle_timeout or None,
            default_max_lifetime=self.default_max_lifetime or None,
            terminate_on_shutdown=self.terminate_on_shutdown,
            retry_backoff=self.retry_backoff,
            sql_row_limit=self.sql_row_limit,
            max_drivers_per_cluster=self.max_drivers_per_cluster,
            health_interval=self.health_interval,
            health_grace=self.health_grace,
            health_probe_failures=self.health_probe_failures,
            retention_days=self.history_retention_days or None,
            webhooks=DeliveryPolicy(schedule=tuple(self.webhook_retry_schedule), jitter=self.webhook_retry_jitter,
                                    timeout=self.webhook_timeout, secret_grace=self.webhook_secret_grace),
            webhook_allowed_networks=tuple(self.webhook_allowed_networks),
            smtp=smtp,
            limits=Limits.of(self.serverapp.root_dir, self.allowed_images, self.max_workers, self.max_worker_cores,
                             self.max_worker_memory),
        )
        self.manager = JobManager(store, backend, EventBus(self.event_queue_size), config, backend_reason=reason)
        owners = OwnerPolicy(self.enforce_owners, self.serverapp.identity_provider, self.admin_users)
        self.log.info("sparkdock: %s", owners.describe())
        self.log.info("sparkdock: %s", config.limits.describe())
        self.settings.update({"sparkdock_manager": self.manager, "sparkdock_owners": owners})

    def _smtp_settings(self) -> SmtpSettings:
        """The SMTP settings; ``ValueError`` names what is wrong (the server then refuses to start)."""
        password, warning = read_password(self.smtp_password_file, dict(os.environ))
        if warning:
            self.log.warning("sparkdock: %s", warning)
        smtp = SmtpSettings(host=self.smtp_host, port=self.smtp_port, tls=self.smtp_tls, user=self.smtp_user,
                            password=password, sender=self.smtp_from,
                            timeout=self.smtp_timeout, ca_file=self.smtp_ca_file)
        problems = smtp.problems() if smtp.enabled else []
        if problems:
            raise ValueError("; ".join(problems))
        self.log.info("sparkdock: %s", smtp.describe())
        return smtp

    def _public_url(self) -> str:
        """The server's URL for the links of notifications, ending with ``/``."""
        url = self.public_url or self.serverapp.connection_url
        return url if url.endswith("/") else url + "/"

    def initialize_handlers(self) -> None:
        """Register the REST and WebSocket routes."""
        from sparkdock.server.handlers import default_handlers

        self.handlers.extend(default_handlers)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await self.manager.ensure_started()

    async def stop_extension(self) -> None:
        """Stop the manager (clusters keep running unless terminate_on_shutdown)."""
        await self.manager.stop()
        self.manager.db.close()
        self.manager.store.close()


