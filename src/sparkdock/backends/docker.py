"""The Docker backend: every role of a cluster is a container on a per-job bridge network.

Layout of a cluster of job ``J`` in installation ``I``:

* a bridge network ``sparkdock-I-J``;
* containers ``sparkdock-I-J-master``, ``sparkdock-I-J-worker-1`` … ``-worker-N``, ``sparkdock-I-J-sql``
  (Spark Thrift Server) and ``sparkdock-I-J-lab`` (JupyterLab), plus ``sparkdock-I-J-driver`` while an
  automated job runs. Each runs the image's entrypoint with its role (:mod:`sparkdock.cluster.entrypoint`,
  which builds the command line with :mod:`sparkdock.cluster.roles`).

Every resource carries the labels ``sparkdock.instance``, ``sparkdock.job``, ``sparkdock.role`` (and
``sparkdock.component`` on containers); the backend finds resources by label only, so two installations
never touch each other's clusters and a restarted server can adopt or remove what exists.

Only the SQL endpoint, the lab and the master's web UI (the cluster's Spark UI) are published, on
``bind_address`` with host ports chosen by the engine; plus, while a driver runs, its application UI, so
that progress can be followed.

Containers run unprivileged: as the image's user ``spark`` (uid 185), with every capability dropped,
``no-new-privileges``, and memory, CPU (``nano_cpus``) and pids limits.

Secrets (the cluster's ``spark.authenticate.secret``, the SQL password, the lab token) are in the roles' 0600
properties files, written on the host in the job's ``secrets/`` folder (0700, removed with the cluster). Each
container gets its own role's file only, put in it before it starts at ``/run/sparkdock/spark.properties``
(0400, owned by uid 185; ``put_archive``, so the engine need not see the server's files); none is in a
container's environment or command (``docker inspect`` shows those).

A cluster is built by the shared sequence of :mod:`sparkdock.backends.provisioning` (phases, deadlines,
readiness probes at the protocol level, exit codes); this module gives it the Docker primitives
(:class:`_DockerParts`) and its own phases ``CheckingImage``, ``PullingImage``, ``CreatingNetwork`` and
``CreatingContainers``. The probes reach the published ports: a published port accepts TCP at once
(docker-proxy), so a TCP check would prove nothing.

docker-py is blocking: every call runs in the backend's thread pool (dockerspawner's pattern), and the
health watcher follows the engine's event stream in a thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import io
import json
import logging
import re
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import LogConfig

from sparkdock.backends import provisioning
from sparkdock.backends.activity import SqlActivity, sql_activity_of, sql_activity_script
from sparkdock.backends.base import (
    AppResult,
    Backend,
    BackendError,
    ClusterInfo,
    ComponentHealth,
    HealthCallback,
    Reporter,
    StagedApp,
    cluster_components,
    out_of_memory_text,
)
from sparkdock.backends.logfiles import RotatingWriter, tail_lines
from sparkdock.backends.provisioning import ERROR_LOG_LINES, ClusterParts, ClusterPlan, Deadlines, endpoints, provision
from sparkdock.cluster import properties, roles
from sparkdock.cluster.classify import SPARK_OOM_EXIT
from sparkdock.model.specs import ClusterSpec

__all__ = ["DEFAULT_IMAGE", "LABEL_COMPONENT", "LABEL_INSTANCE", "LABEL_JOB", "LABEL_ROLE", "DockerBackend"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Image used when neither the spec nor the constructor names one.
DEFAULT_IMAGE = "sparkdock/spark:0.1.0"

LABEL_INSTANCE = "sparkdock.instance"
LABEL_JOB = "sparkdock.job"
LABEL_ROLE = "sparkdock.role"
LABEL_COMPONENT = "sparkdock.component"
#: On a driver container: the job whose cluster it runs on.
LABEL_CLUSTER = "sparkdock.cluster"

#: Folder of a staged application inside the driver container.
APP_DIR_IN_CONTAINER = "/opt/sparkdock/app"

#: The user every container runs as: ``spark`` of the sparkdock image (as in Apache Spark's images), never root.
CONTAINER_USER = "185:185"
_CONTAINER_UID = 185

_COMPONENT_RE = re.compile(r"^(master|sql|lab|driver|worker-[1-9][0-9]*)$")
_ENGINE_DOWN_MARKERS = ("no space left on device", "cannot connect to the docker daemon",
                        "is the docker daemon running")


class _EngineDown(Exception):
    """Internal: the engine is unreachable or refusing; carries its message."""


def _engine_message(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ConnectionError) or isinstance(
        exc.__cause__, requests.exceptions.ConnectionError
    ):  # say why, not urllib3's nested reprs
        reason = _os_reason(exc)
        return "cannot connect to the Docker engine" + (f": {reason}" if reason else "")
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode(errors="replace")
        return str(explanation or exc)
    return str(exc) or type(exc).__name__


def _os_reason(exc: BaseException, depth: int = 0) -> str:
    """The operating system's reason (``strerror``) nested somewhere in a connection error, or ``""``."""
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    if depth > 5:
        return ""
    for inner in (*exc.args, exc.__cause__, exc.__context__):
        if isinstance(inner, BaseException):
            found = _os_reason(inner, depth + 1)
            if found:
                return found
    return ""


def _is_engine_down(exc: BaseException) -> bool:
    rex = requests.exceptions
    if isinstance(exc, rex.ConnectionError | rex.Timeout | rex.ChunkedEncodingError):  # gone, or went away
        return True
    if isinstance(exc, docker.errors.APIError):
        return any(m in _engine_message(exc).lower() for m in _ENGINE_DOWN_MARKERS)
    return isinstance(exc, docker.errors.DockerException) and not isinstance(
        exc, docker.errors.ImageNotFound | docker.errors.NotFound | docker.errors.ContainerError
    )


def _tail(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    if lines <= 0:
        return ""
    parts = text.splitlines(keepends=True)
    return "".join(parts[-lines:])


def _secrets_archive(data: bytes) -> bytes:
    """A tar of the secrets file at :data:`~sparkdock.cluster.properties.CONTAINER_PATH`, for ``put_archive``
    into its parent's parent: the folder 0500 and the file 0400, both owned by the container's user (the engine
    keeps the owner given in the tar). It lives in the container's own layer and goes with it."""
    path = Path(properties.CONTAINER_PATH)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        folder = tarfile.TarInfo(path.parent.name)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o500
        folder.uid = folder.gid = _CONTAINER_UID
        tar.addfile(folder)
        info = tarfile.TarInfo(f"{path.parent.name}/{path.name}")
        info.size, info.mode = len(data), 0o400
        info.uid = info.gid = _CONTAINER_UID
        tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


def _dns_name(name: str) -> str:
    """A host name usable in ``spark://host:port`` URLs (lower case letters, digits and ``-``)."""
    host = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return host[:63].rstrip("-") or "sparkdock"


class DockerBackend(Backend):
    """Clusters as Docker containers; see the module's documentation.

    Args:
        data_dir: the installation's data folder (per-job logs under ``jobs/<job_id>/logs``).
        instance: the installation's id, put in the ``sparkdock.instance`` label of every resource.
        image: the image of every role when the spec names none.
        bind_address: host address the published ports bind (default loopback only).
        docker_host: engine URL (e.g. ``unix:///var/run/docker.sock``); default ``DOCKER_HOST`` or the
            local socket.
        deadlines: seconds the master and workers, the SQL endpoint and the lab may take to come up.
        pids_limit: maximum number of processes/threads in each container.
        pull_timeout: seconds allowed to pull a missing image.
        api_timeout: seconds allowed for one engine API call.
        engine_outage_wait: seconds a running driver is waited for while the engine does not answer (it
            restarts; with ``live-restore`` the driver keeps running), before its run fails with 52.
        public_host: host name put in endpoints (default: ``bind_address``, or ``127.0.0.1`` when it
            binds every address).
    """

    name = "docker"

    def __init__(
        self,
        data_dir: Path | str,
        instance: str,
        *,
        image: str = DEFAULT_IMAGE,
        bind_address: str = "127.0.0.1",
        docker_host: str | None = None,
        deadlines: Deadlines | None = None,
        pids_limit: int = 2048,
        pull_timeout: float = 600.0,
        api_timeout: float = 120.0,
        public_host: str | None = None,
        engine_outage_wait: float = 600.0,
    ) -> None:
        super().__init__(data_dir, instance)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", instance):
            raise ValueError(f"instance must be letters, digits, '_', '.' or '-', not {instance!r}")
        self.image = image
        self.bind_address = bind_address
        self.docker_host = docker_host
        self.deadlines = deadlines or Deadlines()
        self.pids_limit = pids_limit
        self.pull_timeout = pull_timeout
        self.api_timeout = api_timeout
        self.engine_outage_wait = engine_outage_wait
        if public_host:
            self.public_host = public_host
        elif bind_address in ("0.0.0.0", "", "::"):
            self.public_host = "127.0.0.1"
        else:
            self.public_host = bind_address
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=32, thread_name_prefix=f"sparkdock-docker-{instance}"
        )
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        # Docker mutations in flight per job, awaited before a cleanup lists what to remove.
        self._inflight: dict[str, set[concurrent.futures.Future[Any]]] = {}
        # Containers this backend is removing (their `die` events are not health changes).
        self._removing: set[str] = set()
        # Jobs being started: start_cluster reports their failures itself.
        self._starting: set[str] = set()
        #: Set while :meth:`watch` is subscribed to the engine's event stream (a die event from then on is
        #: seen); tests and diagnostics wait on it instead of guessing how long subscribing takes.
        self.watch_connected = threading.Event()
        self._engine_cpus: float | None = None
        # How each dead container of a job ended (a dead container does not change: inspected once).
        self._ended: dict[str, dict[str, ComponentHealth]] = {}

    # ------------------------------------------------------------------------------------------
    # executor and client helpers
    # ------------------------------------------------------------------------------------------

    def _new_client(self, timeout: float | None = -1) -> docker.DockerClient:
        """A new client; ``timeout=None`` for calls that last as long as a container (wait, follow)."""
        t = int(self.api_timeout) if timeout == -1 else timeout
        if self.docker_host:
            return docker.DockerClient(base_url=self.docker_host, timeout=t)
        return docker.from_env(timeout=t)

    def _docker(self) -> docker.DockerClient:
        """The shared client, created on first use (in an executor thread: it talks to the engine)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    async def _run(self, fn: Callable[..., T], *args: Any, _job: str | None = None, **kwargs: Any) -> T:
        """Run a blocking call in the backend's executor.

        Engine failures (unreachable socket, refused connection, out of disk) become
        ``BackendError(52)``. With ``_job``, the call is tracked so that a cleanup of that job first
        waits for it (a container created after the cleanup listed the job's containers would leak).
        """
        future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        if _job is not None:
            pending = self._inflight.setdefault(_job, set())
            pending.add(future)
            future.add_done_callback(pending.discard)
        try:
            return await asyncio.wrap_future(future)
        except BackendError:
            raise
        except Exception as exc:
            if _is_engine_down(exc):
                raise BackendError(52, _engine_message(exc), phase="EngineUnavailable",
                                   retryable=True) from exc
            raise

    async def _wait_inflight(self, job_id: str, timeout: float = 60.0) -> None:
        pending = [f for f in self._inflight.get(job_id, set()) if not f.done()]
        if pending:
            await asyncio.wait([asyncio.wrap_future(f) for f in pending], timeout=timeout)

    def _labels(self, job_id: str, role: str, component: str | None = None) -> dict[str, str]:
        labels = {LABEL_INSTANCE: self.instance, LABEL_JOB: job_id, LABEL_ROLE: role}
        if component is not None:
            labels[LABEL_COMPONENT] = component
        return labels

    def _filters(self, job_id: str | None = None, **labels: str) -> dict[str, Any]:
        wanted = [f"{LABEL_INSTANCE}={self.instance}"]
        if job_id is not None:
            wanted.append(f"{LABEL_JOB}={job_id}")
        wanted += [f"{k}={v}" for k, v in labels.items()]
        return {"label": wanted}

    def _container_name(self, job_id: str, component: str) -> str:
        return f"sparkdock-{self.instance}-{job_id}-{component}"

    def _network_name(self, job_id: str) -> str:
        return f"sparkdock-{self.instance}-{job_id}"

    # blocking helpers (run in the executor) ---------------------------------------------------

    def _b_containers(self, job_id: str | None = None, **labels: str) -> list[Container]:
        return self._docker().containers.list(all=True, filters=self._filters(job_id, **labels))

    def _b_container_logs(self, container: Container, tail: int | None = None) -> str:
        try:
            data = container.logs(stdout=True, stderr=True, tail="all" if tail is None else tail)
        except docker.errors.NotFound:
            return ""
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)

    def _b_save_logs(self, job_id: str, container: Container) -> None:
        component = container.labels.get(LABEL_COMPONENT) or container.labels.get(LABEL_ROLE, "unknown")
        if component == "driver":
            return  # the driver's output is streamed to driver.log while it runs
        try:  # streamed into the job's rotated, capped files, never held whole in memory
            chunks = container.logs(stdout=True, stderr=True, stream=True, follow=False)
        except docker.errors.NotFound:
            return
        with RotatingWriter(self.job_dir(job_id) / "logs" / f"{component}.log", self.log_policy,
                            append=False) as out:
            for chunk in chunks:
                out.write(chunk)

    def _b_remove_container(self, job_id: str, container: Container, save_logs: bool = True) -> None:
        self._removing.add(container.id)
        if save_logs:
            try:
                self._b_save_logs(job_id, container)
            except (OSError, docker.errors.APIError) as exc:
                log.warning("could not save the logs of %s: %s", container.name, exc)
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in _engine_message(exc):
                raise

    def _b_remove_networks(self, job_id: str) -> None:
        for net in self._docker().networks.list(filters=self._filters(job_id)):
            with contextlib.suppress(docker.errors.NotFound):
                net.remove()

    def _b_ports(self, container: Container) -> dict[str, int]:
        container.reload()
        ports: dict[str, int] = {}
        for key, bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
            for b in bindings or []:
                if b.get("HostPort") and (b.get("HostIp") in (self.bind_address, "0.0.0.0", "", "::")
                                          or key not in ports):
                    ports[key] = int(b["HostPort"])
        return ports

    def _b_state(self, container: Container) -> dict[str, Any]:
        container.reload()
        return dict(container.attrs.get("State") or {})

    # ------------------------------------------------------------------------------------------
    # Backend API
    # ------------------------------------------------------------------------------------------

    async def check(self) -> None:
        """Raise ``BackendError(52)`` with the engine's (or client's) message if it cannot be used."""

        def ping() -> None:
            client = self._docker()
            client.ping()

        try:
            await self._run(ping)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(52, _engine_message(exc), phase="EngineUnavailable", retryable=True) from exc

    async def start_cluster(self, job_id: str, spec: ClusterSpec, report: Reporter) -> ClusterInfo:
        """Provision the network and containers of an interactive cluster and wait until it is ready.

        Runs the shared sequence (:func:`~sparkdock.backends.provisioning.provision`) on this backend's
        primitives; the Docker-only phases are ``CheckingImage`` (``PullingImage``), ``CreatingNetwork`` and
        ``CreatingContainers``.

        Raises:
            BackendError: 51 (image missing, container cannot be created/started, master or a worker
                exited or did not come up), 52 (engine unreachable or refusing), 50 (SQL or lab endpoint
                not ready in time, or its container exited). Everything created is removed first; the
                same holds for cancellation.
        """
        self._starting.add(job_id)
        try:
            return await provision(_DockerParts(self, ClusterPlan(job_id, spec)), report, self.deadlines)
        finally:
            self._starting.discard(job_id)

    async def _ensure_image(self, image: str, report: Reporter) -> None:
        report("CheckingImage", f"Checking that the image {image} is present")

        def present() -> bool:
            try:
                self._docker().images.get(image)
                return True
            except docker.errors.ImageNotFound:
                return False

        if await self._run(present):
            return
        report("PullingImage", f"Pulling the image {image}")
        try:
            await asyncio.wait_for(self._run(lambda: self._docker().images.pull(image)),
                                   timeout=self.pull_timeout)
        except BackendError as exc:
            if exc.code == 52 and "no space left" not in exc.detail.lower():
                raise
            raise BackendError(51, f"image {image} is not present and cannot be pulled: {exc.detail}",
                               phase="ErrImagePull") from exc
        except TimeoutError as exc:
            raise BackendError(51, f"image {image} is not present and pulling it took more than "
                               f"{self.pull_timeout:.0f}s", phase="ErrImagePull", retryable=True) from exc
        except docker.errors.APIError as exc:
            raise BackendError(51, f"image {image} is not present and cannot be pulled: "
                               f"{_engine_message(exc)}", phase="ErrImagePull") from exc

    async def _create_network(self, job_id: str) -> str:
        """Create the job's bridge network; return its id."""
        name = self._network_name(job_id)
        try:
            network = await self._run(
                lambda: self._docker().networks.create(
                    name, driver="bridge", check_duplicate=True, labels=self._labels(job_id, "network")),
                _job=job_id,
            )
        except docker.errors.APIError as exc:
            raise BackendError(52, f"cannot create the network {name}: {_engine_message(exc)}",
                               phase="ContainerCannotRun") from exc
        return str(network.id)

    def _b_create(self, job_id: str, component: str, role: str, image: str, network: str,
                  env: dict[str, str], mem_limit: str, cpus: float, ports: Iterable[int] = (),
                  command: list[str] | None = None, properties_file: Path | None = None) -> Container:
        """Create (not start) a component's container: unprivileged and bounded (see :data:`CONTAINER_USER`),
        with the role's secrets file put in it."""
        client = self._docker()
        name = self._container_name(job_id, component)
        alias = _dns_name(name)
        secrets: bytes | None = None
        if properties_file is not None:  # the role's secrets (a missing file is an error)
            try:
                secrets = properties_file.read_bytes()
            except OSError as exc:
                raise BackendError(52, f"cannot read the secrets of the {component}: {exc}",
                                   phase="CreatingContainers", component=component) from exc
            env = {**env, properties.PROPERTIES_ENV: properties.CONTAINER_PATH}
        container = client.containers.create(
            image,
            command=command or [role],
            name=name,
            hostname=alias,
            user=CONTAINER_USER,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            environment=env,
            labels=self._labels(job_id, role, component),
            network=network,
            networking_config={network: client.api.create_endpoint_config(aliases=[alias, component])},
            ports={f"{p}/tcp": (self.bind_address,) for p in ports},
            mem_limit=mem_limit,
            memswap_limit=mem_limit,
            nano_cpus=int(min(cpus, self._b_engine_cpus()) * 1e9),
            pids_limit=self.pids_limit,
            log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "20m", "max-file": "2"}),
            init=False,  # the image runs tini itself
            detach=True,
        )
        if secrets is not None:
            container.put_archive(str(Path(properties.CONTAINER_PATH).parent.parent), _secrets_archive(secrets))
        return container

    def _b_engine_cpus(self) -> float:
        """The engine's CPUs (a container may not be given more), asked once."""
        if self._engine_cpus is None:
            self._engine_cpus = float(self._docker().info().get("NCPU") or 1)
        return self._engine_cpus

    async def _create(self, job_id: str, component: str, *args: Any, **kwargs: Any) -> Container:
        try:
            return await self._run(self._b_create, job_id, component, *args, _job=job_id, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise BackendError(51, _engine_message(exc), phase="ErrImagePull", component=component) from exc
        except docker.errors.APIError as exc:
            raise BackendError(51, f"cannot create the {component} container: {_engine_message(exc)}",
                               phase="ContainerCannotRun", component=component) from exc

    async def _start(self, job_id: str, component: str, container: Container) -> None:
        try:
            await self._run(container.start, _job=job_id)
        except docker.errors.APIError as exc:
            logs = await self._logs_of(container)
            raise BackendError(51, f"cannot start the {component} container: {_engine_message(exc)}",
                               phase="ContainerCannotRun", component=component, logs=logs) from exc

    async def _logs_of(self, container: Container, lines: int = ERROR_LOG_LINES) -> str | None:
        try:
            return await self._run(self._b_container_logs, container, lines)
        except Exception:
            return None

    async def _remove_job(self, job_id: str) -> None:
        """Save the logs of, then remove, every container and network of the job (by label)."""
        await self._wait_inflight(job_id)
        containers = await self._run(self._b_containers, job_id)
        for c in containers:
            self._removing.add(c.id)
        await asyncio.gather(*(self._run(self._b_remove_container, job_id, c) for c in containers))
        await self._run(self._b_remove_networks, job_id)
        await self._run(shutil.rmtree, self.secrets_dir(job_id), ignore_errors=True)
        self._ended.pop(job_id, None)

    async def stop_cluster(self, job_id: str, state: dict[str, Any] | None = None) -> None:
        """Save every container's logs, then remove the job's containers and network (found by label).

        Idempotent; ``state`` is not needed.
        """
        await self._remove_job(job_id)

    async def adopt_cluster(self, job_id: str, state: dict[str, Any] | None) -> ClusterInfo | None:
        """Return the running cluster of ``job_id`` with its existing ports, or ``None``.

        ``None`` when a container of the cluster (master, every worker, sql, lab) is missing or not
        running. Its credentials come from the cluster's secrets folder (the store never holds them).
        """
        state = dict(state or {})
        containers = await self._run(self._b_containers, job_id)
        by_component = {c.labels.get(LABEL_COMPONENT, ""): c for c in containers}
        n_workers = int(state.get("workers") or sum(1 for k in by_component if k.startswith("worker-")))
        wanted = cluster_components(n_workers)
        if n_workers < 1 or any(w not in by_component for w in wanted):
            return None
        if any(by_component[w].status != "running" for w in wanted):
            return None

        def read() -> tuple[dict[str, dict[str, int]], dict[str, str], str | None]:
            ports = {w: self._b_ports(by_component[w]) for w in ("master", "sql", "lab")}
            env: dict[str, str] = {}
            for w in ("sql", "lab", "master"):
                for item in by_component[w].attrs.get("Config", {}).get("Env") or []:
                    key, _, value = item.partition("=")
                    env.setdefault(key, value)
            nets = self._docker().networks.list(filters=self._filters(job_id))
            return ports, env, nets[0].id if nets else None

        ports_by, env, net_id = await self._run(read)
        saved = await self._run(self.credentials, job_id)
        try:
            ports = {
                "sql": ports_by["sql"][f"{roles.DEFAULT_PORTS['sql']}/tcp"],
                "lab": ports_by["lab"][f"{roles.DEFAULT_PORTS['lab']}/tcp"],
                "spark_ui": ports_by["master"][f"{roles.DEFAULT_PORTS['master_ui']}/tcp"],
            }
        except KeyError:
            return None
        host = str(state.get("host") or self.public_host)
        state.update({
            "backend": self.name,
            "instance": self.instance,
            "network": {"id": net_id, "name": self._network_name(job_id)},
            "containers": {w: {"id": by_component[w].id, "name": by_component[w].name} for w in wanted},
            "host": host,
            "ports": ports,
            "sql_user": state.get("sql_user") or "sparkdock",
            "master_url": state.get("master_url") or env.get("SPARK_MASTER_URL"),
            "workers": n_workers,
            "worker_cores": int(state.get("worker_cores") or env.get("SPARKDOCK_WORKER_CORES") or 1),
            "worker_memory": state.get("worker_memory") or env.get("SPARKDOCK_WORKER_MEMORY") or "1g",
            "image": state.get("image") or by_component["master"].attrs.get("Config", {}).get("Image"),
        })
        addresses = {c: (host, ports[key]) for c, key in (("master", "spark_ui"), ("sql", "sql"), ("lab", "lab"))}
        return ClusterInfo(job_id=job_id, endpoints=endpoints(**addresses), state=state, credentials=saved)

    async def list_job_ids(self) -> set[str]:
        """Ids of the jobs with a container or a network labelled with this installation."""

        def collect() -> set[str]:
            client = self._docker()
            flt = self._filters()
            ids = {c.labels.get(LABEL_JOB, "") for c in client.containers.list(all=True, filters=flt)}
            for net in client.networks.list(filters=flt):
                ids.add((net.attrs.get("Labels") or {}).get(LABEL_JOB, ""))
            ids.discard("")
            return ids

        return await self._run(collect)

    async def logs(self, job_id: str, component: str, tail: int | None = None) -> str:
        """Logs of ``component``: the live container's, else the file saved when it was removed, else "".

        Raises:
            KeyError: ``component`` is not ``master``, ``sql``, ``lab``, ``driver`` or ``worker-N``.
        """
        if not _COMPONENT_RE.match(component):
            raise KeyError(component)
        containers = await self._run(self._b_containers, job_id, **{LABEL_COMPONENT: component})
        if containers and component != "driver":
            return await self._run(self._b_container_logs, containers[0], tail)
        path = self.job_dir(job_id) / "logs" / f"{component}.log"
        if await self._run(path.is_file):
            return await self._run(tail_lines, path, tail)
        if containers:
            return await self._run(self._b_container_logs, containers[0], tail)
        return ""

    # ------------------------------------------------------------------------------------------
    # automated jobs
    # ------------------------------------------------------------------------------------------

    async def run_application(
        self, job_id: str, cluster: ClusterInfo, app: StagedApp, report: Reporter
    ) -> AppResult:
        """Run ``app`` in a ``driver`` container on the cluster's network (client deploy mode).

        The staged file is copied into the container (``put_archive``), so the engine need not share
        the host's file system. Output goes to ``job_dir/logs/driver.log`` while it runs. The driver's
        application UI is published on ``bind_address`` and polled for progress
        (``/api/v1/applications/<id>/jobs``). Cancellation removes the driver and propagates.
        """
        st = cluster.state
        network = (st.get("network") or {}).get("name") or self._network_name(cluster.job_id)
        app_file = Path(app.file)
        log_path = self.job_dir(job_id) / "logs" / "driver.log"
        await self._run(lambda: log_path.parent.mkdir(parents=True, exist_ok=True))
        ui_port = roles.DEFAULT_PORTS["driver_ui"]

        # A driver left over by an earlier attempt of the same job would clash by name.
        for old in await self._run(self._b_containers, job_id, **{LABEL_COMPONENT: "driver"}):
            await self._run(self._b_remove_container, job_id, old, False)

        secret = await self._run(provisioning.driver_secret_file, self.secrets_dir(cluster.job_id), cluster.job_id)
        report("CreatingDriver", "Creating the driver container")
        container: Container | None = None
        try:
            container = await self._create(
                job_id, "driver", "driver", st.get("image") or self.image, network,
                self._driver_env(job_id, st, app), roles.container_memory_limit("driver"),
                roles.container_cpu_limit("driver"),
                ports=[ui_port], command=["driver", f"{APP_DIR_IN_CONTAINER}/{app_file.name}", *app.args],
                properties_file=secret,
            )
            await self._run(self._b_copy_app, container, app_file)
            report("StartingDriver", "Starting the driver")
            await self._start(job_id, "driver", container)
            ports = await self._run(self._b_ports, container)
            report("Running", "The driver is running")
            ui = f"http://{self.public_host}:{ports[f'{ui_port}/tcp']}" if f"{ui_port}/tcp" in ports else None
            try:
                status = await self._follow_driver(container, log_path, ui, report)
                state = await self._run(self._b_state, container)
            except docker.errors.NotFound:  # removed from outside sparkdock while it ran: a kill
                status, state = 137, {"Error": "the driver container was removed from outside sparkdock"}
            text = await self._run(tail_lines, log_path, ERROR_LOG_LINES)
            if state.get("Error"):
                text += f"\n[sparkdock] {state['Error']}\n"
            return AppResult(exit_status=int(state.get("ExitCode", -1)) if status is None else status,
                             output_tail=_tail(text, ERROR_LOG_LINES), log_path=log_path,
                             oom_killed=bool(state.get("OOMKilled")))
        finally:
            if container is not None:
                await self._remove_driver(job_id, container)

    def _driver_env(self, job_id: str, st: dict[str, Any], app: StagedApp) -> dict[str, str]:
        """The driver container's environment: the cluster's master, the executors' size, the application."""
        return {
            "SPARK_MASTER_URL": str(st.get("master_url")),
            "SPARKDOCK_HOST": _dns_name(self._container_name(job_id, "driver")),
            "SPARKDOCK_WORKER_CORES": str(st.get("worker_cores", 1)),
            "SPARKDOCK_WORKER_MEMORY": str(st.get("worker_memory", "1g")),
            "SPARKDOCK_APP_TYPE": app.type,
            "SPARKDOCK_APP_NAME": f"sparkdock-{job_id}",
            "SPARKDOCK_SPARK_CONF": json.dumps(app.conf),
            "PYTHONUNBUFFERED": "1",
        }

    def _b_copy_app(self, container: Container, app_file: Path) -> None:
        """Copy the staged file into the created container, under ``APP_DIR_IN_CONTAINER``."""
        data = app_file.read_bytes()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(f"app/{app_file.name}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        container.put_archive(str(Path(APP_DIR_IN_CONTAINER).parent), archive.getvalue())

    async def _follow_driver(self, container: Container, log_path: Path, ui: str | None,
                             report: Reporter) -> int | None:
        """Stream the driver's output to ``log_path`` and report its progress until it ends; its status.

        When the engine stops answering (it restarts: with ``live-restore`` the driver keeps running), the
        driver is followed again once it is back, its output from where the stream broke; after
        ``engine_outage_wait`` seconds without the engine, ``BackendError(52)``."""
        progress_task = asyncio.ensure_future(self._follow_progress(ui, report)) if ui else None
        since: float | None = None
        try:
            while True:
                try:
                    result = await self._follow_once(container.id, log_path, since)
                    break
                except BackendError as err:
                    if err.code != 52 or not err.retryable:
                        raise
                    since = time.time()  # the engine is down: nothing was logged since the stream broke
                    report("EngineUnavailable", "the Docker engine does not answer; the driver keeps running and "
                           "is followed again when the engine is back")
                    await self._until_engine_answers(err)
                    report("Running", "The driver is running (followed again after the engine came back)")
        finally:
            if progress_task is not None:
                progress_task.cancel()
                await asyncio.gather(progress_task, return_exceptions=True)
        status = result.get("StatusCode")
        return None if status is None else int(status)

    async def _follow_once(self, container_id: str, log_path: Path, since: float | None) -> dict[str, Any]:
        """Follow the output (from ``since``, appended) and wait for the end, on a client without timeout
        (it lasts as long as the driver)."""
        long_client = await self._run(self._new_client, None)
        try:
            following = await self._run(long_client.containers.get, container_id)
            await self._run(self._b_stream_logs, following, log_path, since)
            return await self._run(following.wait)
        finally:
            await self._run(long_client.close)

    async def _until_engine_answers(self, err: BackendError) -> None:
        """Wait (a ping a second) until the engine answers again, at most ``engine_outage_wait`` s."""
        deadline = time.monotonic() + self.engine_outage_wait
        while True:
            try:
                await self._run(lambda: self._new_client(10).close())
                return
            except BackendError:
                if time.monotonic() >= deadline:
                    raise BackendError(52, f"{err.detail} (for more than {self.engine_outage_wait:g} s, "
                                       "engine_outage_wait)", phase="EngineUnavailable") from err
                await asyncio.sleep(1.0)

    async def _remove_driver(self, job_id: str, container: Container) -> None:
        """Remove the driver container, to its end even when the run is being cancelled."""
        task = asyncio.ensure_future(self._run(self._b_remove_container, job_id, container, False))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not remove the driver of job %s: %s", job_id, exc)

    def _b_stream_logs(self, container: Container, path: Path, since: float | None = None) -> None:
        with RotatingWriter(path, self.log_policy, append=since is not None) as out:
            try:
                for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True, since=since):
                    out.write(chunk)
            except Exception as exc:  # removed, or the engine went away (urllib3 errors are not all wrapped)
                why = _engine_message(exc) if not isinstance(exc, docker.errors.NotFound) else str(exc)
                out.write(f"\n[sparkdock] log stream ended: {why}\n".encode())

    async def _follow_progress(self, ui_url: str, report: Reporter, interval: float = 2.0) -> None:
        """Report the driver's Spark jobs (from its REST API) whenever they change."""
        last: dict[str, int] | None = None

        def fetch() -> dict[str, int] | None:
            import urllib.request

            try:
                with urllib.request.urlopen(f"{ui_url}/api/v1/applications", timeout=3) as resp:
                    apps = json.loads(resp.read())
                if not apps:
                    return None
                app_id = apps[0]["id"]
                with urllib.request.urlopen(f"{ui_url}/api/v1/applications/{app_id}/jobs",
                                            timeout=3) as resp:
                    jobs = json.loads(resp.read())
            except (OSError, ValueError, KeyError, IndexError):
                return None
            return {
                "jobs_total": len(jobs),
                "jobs_succeeded": sum(1 for j in jobs if j.get("status") == "SUCCEEDED"),
                "jobs_running": sum(1 for j in jobs if j.get("status") == "RUNNING"),
                "jobs_failed": sum(1 for j in jobs if j.get("status") == "FAILED"),
                "tasks_total": sum(int(j.get("numTasks", 0)) for j in jobs),
                "tasks_completed": sum(int(j.get("numCompletedTasks", 0)) for j in jobs),
            }

        while True:
            progress = await self._run(fetch)
            if progress is not None and progress != last:
                last = progress
                report("Running", f"Spark jobs: {progress['jobs_succeeded']}/{progress['jobs_total']} done, "
                       f"tasks {progress['tasks_completed']}/{progress['tasks_total']}", progress=progress)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------------------------------
    # health
    # ------------------------------------------------------------------------------------------

    async def watch(self, on_health: HealthCallback) -> None:
        """Follow the engine's event stream (``die``/``oom`` of this installation's containers) until
        cancelled, calling ``on_health(job_id, component, False, message)`` on the event loop.

        Containers this backend removes itself, drivers (they end normally) and clusters still being
        started (``start_cluster`` reports those) are not reported. The stream reconnects if the engine
        restarts.
        """
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        current: dict[str, Any] = {}

        async def dispatch(job_id: str, component: str, message: str) -> None:
            try:
                result = on_health(job_id, component, False, message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("health callback failed for %s/%s", job_id, component)

        def handle(event: dict[str, Any]) -> None:
            death = self._death_of(event)
            if death is not None:
                asyncio.run_coroutine_threadsafe(dispatch(*death), loop)

        thread = threading.Thread(target=self._b_follow_events, args=(handle, stop, current),
                                  name=f"sparkdock-docker-events-{self.instance}", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(1.0)
        finally:
            stop.set()
            stream = current.get("stream")
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    async def sql_activity(self, job_id: str, state: dict[str, Any]) -> SqlActivity | None:
        """Read from the Thrift Server's application UI inside the SQL container (``docker exec``: that port is
        not published)."""
        sql = ((state.get("containers") or {}).get("sql") or {}).get("id")
        if not sql:
            return None
        cmd = sql_activity_script(f"http://127.0.0.1:{roles.DEFAULT_PORTS['sql_ui']}")

        def run() -> SqlActivity:
            api = self._docker().api
            exec_id = api.exec_create(sql, cmd, stdout=True, stderr=True)["Id"]
            out = api.exec_start(exec_id).decode("utf-8", "replace")
            code = api.exec_inspect(exec_id).get("ExitCode")
            if code != 0:
                raise RuntimeError(f"reading the Thrift Server's activity failed ({code}): {out.strip()[-300:]}")
            return sql_activity_of(json.loads(out.strip().splitlines()[-1]))

        return await self._run(run)

    async def health(self, job_id: str, state: dict[str, Any]) -> dict[str, ComponentHealth]:
        """Whether each container of the cluster runs: one ``GET /containers/json`` for the whole cluster
        (label-filtered), plus one inspect per container seen dead for the first time (its exit code,
        ``State.OOMKilled``, the engine's error, its last log line). A container of ``state`` that no longer
        exists is dead too."""
        expected = [c for c in (state.get("containers") or {}) if c != "driver"]
        return await self._run(self._b_health, job_id, expected)

    def _b_health(self, job_id: str, expected: list[str]) -> dict[str, ComponentHealth]:
        api = self._docker().api
        found: dict[str, ComponentHealth] = {}
        for row in api.containers(all=True, filters=self._filters(job_id)):
            labels = row.get("Labels") or {}
            component = labels.get(LABEL_COMPONENT) or labels.get(LABEL_ROLE) or "unknown"
            if component == "driver":
                continue
            if row.get("State") in ("running", "created", "restarting"):
                found[component] = ComponentHealth(True)
                continue
            if row.get("State") == "paused":  # it may be resumed: not cached
                found[component] = ComponentHealth(False, f"the {component} container is paused")
                continue
            ended = self._ended.setdefault(job_id, {})
            if row["Id"] not in ended:
                ended[row["Id"]] = self._b_ended(api, row["Id"], component)
            found[component] = ended[row["Id"]]
        for component in expected:
            found.setdefault(component, ComponentHealth(False, f"the {component} container is gone (removed)"))
        return found

    def _b_ended(self, api: Any, cid: str, component: str) -> ComponentHealth:
        """How a container that does not run ended."""
        try:
            st = api.inspect_container(cid).get("State") or {}
        except docker.errors.NotFound:
            return ComponentHealth(False, f"the {component} container is gone (removed)")
        code = st.get("ExitCode")
        how = f"container exited with code {code}"
        if st.get("Error"):
            how += f" ({st['Error']})"
        try:
            last = api.logs(cid, stdout=True, stderr=True, tail=1).decode(errors="replace").strip()
        except docker.errors.APIError:
            last = ""
        oom = bool(st.get("OOMKilled")) or code == SPARK_OOM_EXIT or "OutOfMemoryError" in last
        if oom:
            return ComponentHealth(False, out_of_memory_text(component, how), oom=True)
        return ComponentHealth(False, f"the {component} {how}" + (f": {last[:300]}" if last else ""))

    def _death_of(self, event: dict[str, Any]) -> tuple[str, str, str] | None:
        """``(job_id, component, message)`` of an engine event that is a health change to report, else None."""
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        cid = actor.get("ID") or event.get("id") or ""
        if attrs.get(LABEL_INSTANCE) != self.instance or cid in self._removing:
            return None
        job_id = attrs.get(LABEL_JOB)
        role = attrs.get(LABEL_ROLE)
        if not job_id or role == "driver" or job_id in self._starting:
            return None
        component = attrs.get(LABEL_COMPONENT) or role or "unknown"
        if (event.get("Action") or event.get("status")) == "oom":
            return job_id, component, f"the {component} container ran out of memory"
        return job_id, component, f"the {component} container exited with code {attrs.get('exitCode', '?')}"

    def _b_follow_events(self, handle: Callable[[dict[str, Any]], None], stop: threading.Event,
                         current: dict[str, Any]) -> None:
        """The event thread: subscribe, hand every event to ``handle``, reconnect with backoff until ``stop``.

        The open stream is kept in ``current["stream"]`` so that the loop's side can close it."""
        since = int(time.time())
        backoff = 1.0
        while not stop.is_set():
            client = None
            try:
                client = self._new_client()
                stream = client.events(
                    decode=True, since=since,
                    filters={"type": "container", "event": ["die", "oom"],
                             "label": [f"{LABEL_INSTANCE}={self.instance}"]},
                )
                current["stream"] = stream
                self.watch_connected.set()  # events() returns once the engine has subscribed us
                if stop.is_set():
                    stream.close()
                    break
                backoff = 1.0
                for event in stream:
                    since = max(since, int(event.get("time", since)))
                    handle(event)
            except Exception as exc:
                if not stop.is_set():
                    log.warning("Docker event stream failed (%s); reconnecting", exc)
            finally:
                self.watch_connected.clear()
                current.pop("stream", None)
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            if not stop.wait(backoff):
                backoff = min(backoff * 2, 30.0)

    async def close(self) -> None:
        """Close the client and the thread pool (clusters keep running)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await self._run(client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)



#: The port of each component that the sequence reaches, published on the host.
_PUBLISHED = {"master": roles.DEFAULT_PORTS["master_ui"], "sql": roles.DEFAULT_PORTS["sql"],
              "lab": roles.DEFAULT_PORTS["lab"]}


class _DockerParts(ClusterParts):
    """The Docker primitives of one cluster: a bridge network, a container a component, published ports."""

    def __init__(self, backend: DockerBackend, plan: ClusterPlan) -> None:
        super().__init__(plan)
        self.backend = backend
        self.job_id = plan.job_id
        self.image = plan.spec.image or backend.image
        self.secrets = backend.secrets_dir(plan.job_id)
        self.network_id: str | None = None
        self.containers: dict[str, Container] = {}
        self.ports: dict[str, int] = {}

    def _host(self, component: str) -> str:
        """The component's name on the cluster's network (a DNS name: used in ``spark://`` URLs)."""
        return _dns_name(self.backend._container_name(self.job_id, component))

    @property
    def master_url(self) -> str:
        return f"spark://{self._host('master')}:{roles.DEFAULT_PORTS['master']}"

    async def prepare(self, report: Reporter) -> None:
        """``CheckingImage`` (pulling it if missing), ``CreatingNetwork``, ``CreatingContainers``."""
        plan = self.plan
        await self.backend._ensure_image(self.image, report)
        report("CreatingNetwork", "Creating the cluster's network")
        self.network_id = await self.backend._create_network(self.job_id)
        await self.backend._run(provisioning.write_secret_files, plan, self.secrets)
        report("CreatingContainers",
               f"Creating the containers: master, {plan.spec.workers} worker(s), SQL, lab")
        created = await asyncio.gather(*(self._create(c) for c in plan.components))
        self.containers = dict(zip(plan.components, created, strict=True))

    async def _create(self, component: str) -> Container:
        spec = self.plan.spec
        role = "worker" if component.startswith("worker-") else component
        env = {
            "SPARK_MASTER_URL": self.master_url,
            "SPARKDOCK_WORKER_CORES": str(spec.worker_cores),
            "SPARKDOCK_WORKER_MEMORY": spec.worker_memory,
            "SPARKDOCK_HOST": self._host(component),
        }
        memory = roles.container_memory_limit(role, spec.worker_memory, spec.worker_cores)
        cpus = roles.container_cpu_limit(role, spec.worker_cores)
        ports = [_PUBLISHED[component]] if component in _PUBLISHED else []
        return await self.backend._create(self.job_id, component, role, self.image,
                                          self.backend._network_name(self.job_id), env, memory, cpus, ports=ports,
                                          properties_file=provisioning.secret_file(self.secrets, component))

    async def start(self, component: str) -> None:
        await self.backend._start(self.job_id, component, self.containers[component])

    async def exited(self, components: Sequence[str]) -> dict[str, str]:
        """One engine call a container: its ``State`` (exit code, OOM kill, the engine's error)."""
        watched = [c for c in components if c in self.containers]
        states = await asyncio.gather(*(self.backend._run(self.backend._b_state, self.containers[c])
                                        for c in watched))
        gone: dict[str, str] = {}
        for component, state in zip(watched, states, strict=True):
            if state.get("Running") or state.get("Status") in ("created", "running", "restarting"):
                continue
            detail = f"the {component} container exited with code {state.get('ExitCode')}"
            if state.get("OOMKilled"):
                detail += " (killed: out of memory)"
            if state.get("Error"):
                detail += f": {state['Error']}"
            gone[component] = detail
        return gone

    async def address(self, component: str) -> tuple[str, int] | None:
        """The host port the engine chose for the component's published port."""
        ports = await self.backend._run(self.backend._b_ports, self.containers[component])
        port = ports.get(f"{_PUBLISHED[component]}/tcp")
        if port is None:
            return None
        self.ports[component] = port
        return self.backend.public_host, port

    async def last_logs(self, component: str, lines: int) -> str | None:
        container = self.containers.get(component)
        return await self.backend._logs_of(container, lines) if container is not None else None

    async def remove(self) -> None:
        await self.backend._remove_job(self.job_id)

    def state(self) -> dict[str, Any]:
        spec = self.plan.spec
        return {
            "backend": self.backend.name,
            "instance": self.backend.instance,
            "image": self.image,
            "network": {"id": self.network_id, "name": self.backend._network_name(self.job_id)},
            "containers": {c: {"id": k.id, "name": k.name} for c, k in self.containers.items()},
            "host": self.backend.public_host,
            "ports": {"sql": self.ports["sql"], "lab": self.ports["lab"], "spark_ui": self.ports["master"]},
            "sql_user": self.plan.sql_user,
            "master_url": self.master_url,
            "workers": spec.workers,
            "worker_cores": spec.worker_cores,
            "worker_memory": spec.worker_memory,
        }
