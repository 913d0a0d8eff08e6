"""The local-process backend: a cluster made of processes of the installed pyspark, on 127.0.0.1.

For users without Docker. Every role of a cluster (Spark standalone master, N workers, the Spark Thrift
Server as SQL endpoint, JupyterLab as lab endpoint) and every automated job's driver is a local process
started from the command lines of :mod:`sparkdock.cluster.roles`. A cluster is built by the shared
sequence of :mod:`sparkdock.backends.provisioning` (the same phases, readiness probes and exit codes as the
Docker backend); this module gives it the local primitives (:class:`_LocalParts`) and its own phase
``CheckingRuntime``.

Layout of a job's folder (``<data_dir>/jobs/<job_id>/``)::

    logs/<component>.log     stdout+stderr of master, worker-1..N, sql, lab, driver (kept after stop)
    secrets/                 0700, removed on stop: the roles' 0600 properties files (cluster.properties for
                             master, workers and drivers; sql.properties; lab.properties)
    work/                    removed on stop: worker-<i>/ (executors), sql/ (warehouse, metastore_db),
                             lab/ (notebooks, ipython, runtime), tmp/ (SPARK_LOCAL_DIRS),
                             driver/ (a driver's working folder, removed when the driver ends)

Processes:

* every process is started in its own session (``start_new_session``), so it survives a restart of the
  Jupyter server and its whole process group can be signalled;
* every process gets ``SPARKDOCK_JOB=<job_id>`` and ``SPARKDOCK_INSTANCE=<instance>`` in its environment.
  Children (executors, kernels, Python workers) inherit them, so the processes of a job are found through
  ``/proc/<pid>/environ`` even without the recorded state, and two installations (different instances)
  never touch each other's processes;
* the recorded pids come with their start time (field 22 of ``/proc/<pid>/stat``), so a reused pid is
  never mistaken for (or signalled as) a process of the cluster;
* everything binds to 127.0.0.1 and every port comes from the OS (no fixed 7077/8080/10000).

Secrets (the cluster's ``spark.authenticate.secret``, the SQL password, the lab token) reach the processes
through their 0600 properties files only (:mod:`sparkdock.cluster.properties`): never on a command line or in
an environment variable. The SQL endpoint always checks its password: the authenticator is compiled with the
JDK's ``javac`` on first use (cached by content); without a JDK the launch fails with 51 and says what to
install, unless ``sql_auth="none"`` was chosen.

Exit codes of the local-only steps: Java or pyspark missing or broken is 51 (phase ``ContainerCannotRun``:
the processes could not run); the launcher itself unable to work (data folder not writable, no free port,
fork failure) is 52. The sequence's own table covers the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sparkdock.backends import provisioning
from sparkdock.backends.activity import SqlActivity, read_sql_activity, sql_activity_of
from sparkdock.backends.base import (
    AppResult,
    Backend,
    BackendError,
    ClusterInfo,
    ComponentHealth,
    HealthCallback,
    Reporter,
    StagedApp,
    out_of_memory_text,
)
from sparkdock.backends.logfiles import rotate_copytruncate, rotate_dir, tail_lines
from sparkdock.cluster import probes, roles
from sparkdock.cluster.classify import SPARK_OOM_EXIT
from sparkdock.model.specs import ClusterSpec

__all__ = ["LocalBackend", "local_available"]

log = logging.getLogger(__name__)

#: Environment markers put in every process of a job.
JOB_ENV = "SPARKDOCK_JOB"
INSTANCE_ENV = "SPARKDOCK_INSTANCE"
#: Address every process binds and advertises.
LOOPBACK = "127.0.0.1"
#: Lines of the driver's output returned in AppResult.output_tail.
DRIVER_TAIL_LINES = 60
#: Oldest Java major version Spark 4 runs on.
MIN_JAVA = 17

_AUTH_SOURCE = Path(roles.__file__).with_name("java") / "SparkdockPasswdAuthenticator.java"
_WORKER_RE = re.compile(r"^worker-[1-9][0-9]*$")
_FIXED_COMPONENTS = ("master", "sql", "lab", "driver")
#: The only variables of the server's environment a cluster's processes get: what finds programs and libraries,
#: the user, locale and time zone, and Java's settings. Nothing else reaches them: not the server's tokens
#: (``JUPYTER_TOKEN``, ``JUPYTERHUB_API_TOKEN``), not cloud credentials, not a Spark setting of the server's.
#: ``LocalBackend(extra_env=...)`` adds variables explicitly.
PASSED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "JAVA_HOME", "JAVA_TOOL_OPTIONS",
    "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV",
)
PASSED_ENV_PREFIXES = ("LC_",)

_jar_lock = threading.Lock()
_ports_lock = threading.Lock()
_recent_ports: dict[int, float] = {}
_PORT_HOLD_S = 120.0


# ---------------------------------------------------------------------------------------------
# /proc helpers
# ---------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, pgid, start_time)`` of a process from ``/proc/<pid>/stat``, or ``None`` if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2:].split()
    try:
        return rest[0], int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None


def proc_start_time(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot, field 22 of ``/proc/<pid>/stat``)."""
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process, and the same one if ``start_time`` is given."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is None or stat[2] == start_time


def _proc_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in (JOB_ENV.encode(), INSTANCE_ENV.encode()):
            env[key.decode()] = value.decode(errors="replace")
    return env


def _marked_processes(instance: str, job_id: str | None = None) -> dict[int, tuple[str, int]]:
    """Live processes carrying this instance's marker: ``pid -> (job_id, start_time)``."""
    found: dict[int, tuple[str, int]] = {}
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        env = _proc_env(pid)
        if env.get(INSTANCE_ENV) != instance or JOB_ENV not in env:
            continue
        if job_id is not None and env[JOB_ENV] != job_id:
            continue
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        found[pid] = (env[JOB_ENV], stat[2])
    return found


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _pick_ports(count: int) -> list[int]:
    """``count`` distinct free ports of 127.0.0.1, chosen by the OS (and not handed out recently)."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _ports_lock:
            now = time.monotonic()
            for port, at in list(_recent_ports.items()):
                if now - at > _PORT_HOLD_S:
                    del _recent_ports[port]
            attempts = 0
            while len(ports) < count:
                attempts += 1
                if attempts > count * 20:
                    raise OSError("could not find enough free ports on 127.0.0.1")
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((LOOPBACK, 0))
                port = int(s.getsockname()[1])
                if port in _recent_ports or port in ports:
                    continue
                ports.append(port)
            for port in ports:
                _recent_ports[port] = now
    finally:
        for s in socks:
            s.close()
    return ports


def _java_major(version_output: str) -> int | None:
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_392"
        major = int(m.group(2))
    return major


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class _Runtime:
    """What the runtime check found."""

    java: str
    java_version: str
    javac: str | None
    spark_home: str
    pyspark_version: str
    python: str


def _runtime_error(detail: str) -> BackendError:
    return BackendError(51, detail, phase="ContainerCannotRun")


def _check_runtime(env: Mapping[str, str], python: str, spark_home: str | None) -> _Runtime:
    """Check Java and pyspark as the cluster's processes will see them.

    Raises:
        BackendError: code 51, phase ``ContainerCannotRun``, with a message saying what to fix.
    """
    home = _check_spark_home(spark_home)
    java, javac = _find_java(env)
    version = _java_version(java, env)
    pyspark_version = _check_python(python, env)
    # the line naming the version (a JAVA_TOOL_OPTIONS in the environment makes the JVM say so first)
    first = next((line for line in version.splitlines() if "version" in line), "java")
    return _Runtime(java=java, java_version=first, javac=javac, spark_home=str(home),
                    pyspark_version=pyspark_version, python=python)


def _check_spark_home(spark_home: str | None) -> Path:
    """pyspark's Spark installation: ``bin/spark-class`` and ``jars/``."""
    if not spark_home:
        raise _runtime_error("pyspark is not installed (pip install 'pyspark==4.3.0'), and SPARK_HOME is not set")
    home = Path(spark_home)
    if not (home / "bin" / "spark-class").is_file() or not (home / "jars").is_dir():
        raise _runtime_error(f"{spark_home} is not a Spark installation (no bin/spark-class or jars/); "
                             "reinstall pyspark or fix SPARK_HOME")
    return home


def _find_java(env: Mapping[str, str]) -> tuple[str, str | None]:
    """What spark-class runs (``$JAVA_HOME/bin/java``, else ``java`` on PATH), and the ``javac`` beside it."""
    java_home = env.get("JAVA_HOME", "")
    if java_home:
        java = str(Path(java_home) / "bin" / "java")
        if not os.access(java, os.X_OK):
            raise _runtime_error(f"JAVA_HOME is set to {java_home!r}, but {java} does not exist or is not "
                                 "executable; point JAVA_HOME at a Java 17+ installation or unset it")
        javac = str(Path(java_home) / "bin" / "javac")
        return java, javac if os.access(javac, os.X_OK) else None
    found = shutil.which("java", path=env.get("PATH"))
    if not found:
        raise _runtime_error("no 'java' on PATH and JAVA_HOME is not set; install a Java 17+ runtime "
                             "(e.g. openjdk-17-jdk-headless) or set JAVA_HOME")
    return found, shutil.which("javac", path=env.get("PATH"))


def _java_version(java: str, env: Mapping[str, str]) -> str:
    """The output of ``java -version``, checked to be Java 17 or newer."""
    try:
        out = subprocess.run([java, "-version"], env=dict(env), capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _runtime_error(f"cannot run {java} -version: {exc}") from exc
    version = (out.stderr or out.stdout).strip()
    if out.returncode != 0:
        raise _runtime_error(f"{java} -version failed with exit status {out.returncode}: {version[-500:]}")
    major = _java_major(version)
    if major is not None and major < MIN_JAVA:
        raise _runtime_error(f"Spark 4 needs Java {MIN_JAVA} or newer, but {java} is Java {major}; "
                             "set JAVA_HOME to a newer Java")
    return version


def _check_python(python: str, env: Mapping[str, str]) -> str:
    """The Python of the lab and drivers must import pyspark and jupyterlab; pyspark's version."""
    probe = "import pyspark, sys; print(pyspark.__version__); import jupyterlab"
    try:
        out = subprocess.run([python, "-c", probe], env=dict(env), capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _runtime_error(f"cannot run {python}: {exc}") from exc
    if out.returncode != 0:
        err = (out.stderr or out.stdout).strip().splitlines()
        raise _runtime_error(f"{python} cannot import pyspark and jupyterlab: "
                             f"{err[-1] if err else out.returncode}; install them (pip install 'sparkdock[spark,lab]')")
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"


def _base_env(python: str, spark_home: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a cluster's processes, built explicitly: :data:`PASSED_ENV` from the server's, the
    interpreter's folder first on ``PATH``, ``SPARK_HOME``, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith(PASSED_ENV_PREFIXES)}
    bindir = str(Path(python).parent)
    path = env.get("PATH", os.defpath)
    if bindir not in path.split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + path
    if spark_home:
        env["SPARK_HOME"] = spark_home
    env.update(extra or {})
    return env


def local_available(python: str | None = None, spark_home: str | None = None) -> tuple[bool, str]:
    """Whether Java and pyspark are usable for the local backend, and why not.

    Runs ``java -version`` and imports pyspark with the environment the processes would get (blocking,
    about a second).

    Returns:
        ``(True, "java ..., pyspark X at PATH")`` or ``(False, reason)``.
    """
    py = python or sys.executable
    home = spark_home or roles.default_spark_home()
    try:
        rt = _check_runtime(_base_env(py, home), py, home)
    except BackendError as exc:
        return False, exc.detail
    return True, f"{rt.java_version}; pyspark {rt.pyspark_version} at {rt.spark_home}"


# ---------------------------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------------------------


@dataclass
class _Proc:
    """A process of a job: its pid and start time, and the Popen when this process started it."""

    component: str
    pid: int
    start_time: int | None
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid, self.start_time)

    def exit_status(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def as_state(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time}


@dataclass
class _Cluster:
    job_id: str
    state: dict[str, Any]
    procs: dict[str, _Proc] = field(default_factory=dict)
    ready: bool = False
    reported: set[str] = field(default_factory=set)


class LocalBackend(Backend):
    """Clusters and drivers as local processes of the installed pyspark (see the module docstring).

    Args:
        data_dir: sparkdock's data folder; each job gets ``jobs/<job_id>/``.
        instance: the installation's marker; processes of other instances are never touched.
        python: Python of the lab, drivers and PySpark workers (default: this interpreter).
        spark_home: the Spark installation (default: ``SPARK_HOME`` or pyspark's package folder).
        sql_auth: ``"password"`` (the default: the SQL endpoint checks the cluster's password; 51 when the
            authenticator cannot be built, e.g. without a JDK) or ``"none"`` (any login is accepted by the
            SQL endpoint on 127.0.0.1: for tests that do not need it).
        deadlines: seconds the master and workers, the SQL endpoint and the lab may take to come up.
        stop_timeout: seconds between SIGTERM and SIGKILL on stop.
        adopt_timeout: seconds the SQL endpoint gets to answer when adopting a cluster.
        watch_interval: seconds between two health checks of :meth:`watch`.
        progress_interval: seconds between two polls of a driver's UI for progress.
        extra_env: more environment variables for every process.
        cache_dir: where the compiled SQL authenticator is kept, by content hash (default
            ``<data_dir>/cache``); several installations may share one.
        spark_conf: more Spark properties for every application of a cluster (the SQL endpoint, lab
            sessions and drivers); an application's own conf wins. E.g. shorter
            ``spark.dynamicAllocation.*`` timeouts so that idle executors are given back sooner.
    """

    name = "local"

    def __init__(
        self,
        data_dir: Path | str,
        instance: str,
        *,
        python: str | None = None,
        spark_home: str | None = None,
        sql_auth: str = "password",
        deadlines: provisioning.Deadlines | None = None,
        stop_timeout: float = 10.0,
        adopt_timeout: float = 30.0,
        watch_interval: float = 2.0,
        progress_interval: float = 1.5,
        extra_env: Mapping[str, str] | None = None,
        cache_dir: Path | str | None = None,
        spark_conf: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, instance)
        if sql_auth not in ("password", "none"):
            raise ValueError(f"sql_auth must be 'password' or 'none', not {sql_auth!r}")
        self.python = python or sys.executable
        self._spark_home = spark_home
        self.sql_auth = sql_auth
        self.deadlines = deadlines or provisioning.Deadlines()
        self.stop_timeout = stop_timeout
        self.adopt_timeout = adopt_timeout
        self.watch_interval = watch_interval
        self.progress_interval = progress_interval
        self.extra_env = dict(extra_env or {})
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / "cache"
        self.spark_conf = {str(k): str(v) for k, v in (spark_conf or {}).items()}
        self._clusters: dict[str, _Cluster] = {}
        self._drivers: dict[str, _Proc] = {}
        self._runtime_cache: dict[tuple[str, ...], _Runtime] = {}
        #: Health passes :meth:`watch` has completed; tests and diagnostics wait on it instead of sleeping.
        self.watch_passes = 0

    # -- helpers ------------------------------------------------------------------------------

    @property
    def spark_home(self) -> str | None:
        """The Spark installation the processes run (resolved at each use)."""
        return self._spark_home or roles.default_spark_home()

    def _env(self) -> dict[str, str]:
        return _base_env(self.python, self.spark_home, self.extra_env)

    def _markers(self, job_id: str) -> dict[str, str]:
        return {JOB_ENV: job_id, INSTANCE_ENV: self.instance}

    async def _runtime(self, env: Mapping[str, str]) -> _Runtime:
        key = (env.get("JAVA_HOME", ""), env.get("PATH", ""), self.python, self.spark_home or "")
        cached = self._runtime_cache.get(key)
        if cached is not None and os.access(cached.java, os.X_OK):
            return cached
        rt = await asyncio.to_thread(_check_runtime, env, self.python, self.spark_home)
        self._runtime_cache[key] = rt
        return rt

    def _auth_jar(self, rt: _Runtime, env: Mapping[str, str]) -> str | None:
        """Build (once, cached by content) the SQL authenticator jar; ``None`` with ``sql_auth="none"``.

        Raises BackendError(51) when it cannot be built: the SQL endpoint never starts without its check."""
        if self.sql_auth == "none":
            return None
        src = _AUTH_SOURCE.read_bytes()
        jars = sorted(p.name for p in (Path(rt.spark_home) / "jars").glob("*.jar"))
        digest = hashlib.sha256(src + "\n".join(jars).encode()).hexdigest()[:16]
        cache = self.cache_dir
        jar = cache / f"sparkdock-auth-{digest}.jar"
        if jar.is_file():
            return str(jar)
        if rt.javac is None:
            raise BackendError(
                51, f"the SQL endpoint's password check needs a JDK to be built once, and {rt.java} has no javac "
                "beside it: install a JDK 17 or newer (e.g. apt install openjdk-17-jdk-headless) or point "
                "JAVA_HOME at one", phase="ContainerCannotRun", component="sql")
        with _jar_lock:
            if jar.is_file():
                return str(jar)
            cache.mkdir(parents=True, exist_ok=True)
            build = cache / f"build-{digest}-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                classes = build / "classes"
                classes.mkdir(parents=True)
                out = subprocess.run(
                    [rt.javac, "--release", str(MIN_JAVA), "-d", str(classes),
                     "-cp", str(Path(rt.spark_home) / "jars" / "*"), str(_AUTH_SOURCE)],
                    env=dict(env), capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
                )
                if out.returncode != 0:
                    raise BackendError(
                        51, f"javac failed to build the SQL authenticator: {(out.stderr or out.stdout)[-800:]}",
                        phase="ContainerCannotRun", component="sql")
                tmp = build / "auth.jar"
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: sparkdock\n\n")
                    for path in sorted(classes.rglob("*.class")):
                        zf.write(path, path.relative_to(classes).as_posix())
                os.replace(tmp, jar)
            except subprocess.TimeoutExpired as exc:
                raise BackendError(52, f"javac timed out: {exc}", phase="CheckingRuntime") from exc
            finally:
                shutil.rmtree(build, ignore_errors=True)
        return str(jar)

    def _spawn(self, job_id: str, component: str, cmd: roles.RoleCommand, env: Mapping[str, str],
               log_dir: Path, extra_env: Mapping[str, str] | None = None,
               cwd: str | None = None) -> _Proc:
        """Start one process in its own session, its output appended to ``logs/<component>.log``."""
        workdir = cwd or cmd.cwd
        full_env = {**env, **cmd.env, **(extra_env or {}), **self._markers(job_id)}
        try:
            if workdir:
                Path(workdir).mkdir(parents=True, exist_ok=True)
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / f"{component}.log", "ab") as fh:
                fh.write(f"----- sparkdock: starting {component} at {_now()} -----\n".encode())
                fh.flush()
                popen = subprocess.Popen(
                    cmd.argv, env=full_env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=fh,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
        except (FileNotFoundError, PermissionError) as exc:
            if exc.filename and str(exc.filename) == cmd.argv[0]:
                raise BackendError(51, f"cannot run {component} ({cmd.argv[0]}): {exc}",
                                   phase="ContainerCannotRun", component=component) from exc
            raise BackendError(52, f"cannot start {component}: {exc}", phase="ContainerCannotRun",
                               component=component) from exc
        except OSError as exc:  # fork failure, out of memory, too many processes...
            raise BackendError(52, f"the local launcher cannot start {component}: {exc}",
                               phase="ContainerCannotRun", component=component) from exc
        return _Proc(component, popen.pid, proc_start_time(popen.pid), popen)

    def _log_tail(self, job_id: str, component: str, lines: int = provisioning.ERROR_LOG_LINES) -> str:
        return tail_lines(self.job_dir(job_id) / "logs" / f"{component}.log", lines)

    @staticmethod
    def _endpoints(state: Mapping[str, Any]) -> dict[str, Any]:
        ports = state["ports"]
        return provisioning.endpoints(master=(LOOPBACK, ports["master_ui"]), sql=(LOOPBACK, ports["sql"]),
                                      lab=(LOOPBACK, ports["lab"]))

    # -- Backend API --------------------------------------------------------------------------

    async def check(self) -> None:
        """Raise BackendError(52) if processes cannot be launched or the data folder is not writable."""

        def probe() -> None:
            if sys.platform != "linux" or not Path("/proc/self/stat").exists():
                raise BackendError(52, "the local backend needs Linux (/proc)", phase="CheckingRuntime")
            jobs = self.data_dir / "jobs"
            try:
                jobs.mkdir(parents=True, exist_ok=True)
                probe_file = jobs / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
                probe_file.write_bytes(b"ok")
                probe_file.unlink()
            except OSError as exc:
                raise BackendError(52, f"the data folder {jobs} is not writable: {exc}",
                                   phase="CheckingRuntime") from exc

        await asyncio.to_thread(probe)

    async def start_cluster(self, job_id: str, spec: ClusterSpec, report: Reporter) -> ClusterInfo:
        """Start master, workers, SQL endpoint and lab as local processes; wait until all are ready.

        Runs the shared sequence (:func:`~sparkdock.backends.provisioning.provision`) on this backend's
        primitives; the local-only phase is ``CheckingRuntime``. On any failure or cancellation every
        process of the job is stopped and its work folder removed (logs are kept) before the error
        propagates.
        """
        if job_id in self._clusters:
            raise BackendError(52, f"a cluster for job {job_id} is already managed by this backend")
        cluster = self._clusters[job_id] = _Cluster(job_id, state={})
        parts = _LocalParts(self, cluster, provisioning.ClusterPlan(job_id, spec))
        info = await provisioning.provision(parts, report, self.deadlines)
        cluster.ready = True
        return info

    async def stop_cluster(self, job_id: str, state: dict[str, Any] | None = None) -> None:
        """Stop every process of the job (SIGTERM to the process groups, SIGKILL after ``stop_timeout``)
        and remove its work folder; ``logs/`` is kept. Idempotent; finds processes by their marker when
        ``state`` is ``None``."""
        cluster = self._clusters.pop(job_id, None)
        driver = self._drivers.pop(job_id, None)
        known: list[_Proc] = []
        if cluster is not None:
            known += cluster.procs.values()
        if driver is not None:
            known.append(driver)
        for component, rec in ((state or {}).get("processes") or {}).items():
            try:
                known.append(_Proc(component, int(rec["pid"]), rec.get("start_time")))
            except (KeyError, TypeError, ValueError):
                continue
        await asyncio.to_thread(self._stop_sync, job_id, known, state)

    def _stop_sync(self, job_id: str, known: list[_Proc], state: Mapping[str, Any] | None) -> None:
        # The recorded processes that are still the same processes (pid and start time): their process
        # groups are signalled. Every other process carrying the job's marker is signalled by pid.
        leaders: dict[int, _Proc] = {}
        for proc in known:
            if proc.popen is not None or (proc.pid not in leaders and pid_alive(proc.pid, proc.start_time)):
                leaders[proc.pid] = proc

        def is_leader(pid: int) -> bool:
            stat = _proc_stat(pid)
            return bool(stat and stat[1] == pid)

        def kill_all(sig: int) -> None:
            for pid, proc in leaders.items():
                if proc.alive():
                    _signal(pid, sig, group=is_leader(pid))
            for pid, (_, start) in _marked_processes(self.instance, job_id).items():
                if pid not in leaders and pid_alive(pid, start):
                    _signal(pid, sig, group=False)

        def remaining() -> list[int]:
            alive = [pid for pid, p in leaders.items() if p.alive()]
            alive += [pid for pid in _marked_processes(self.instance, job_id) if pid not in leaders]
            return alive

        kill_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        left = remaining()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = remaining()
        for _ in range(10):
            if not left:
                break
            kill_all(signal.SIGKILL)
            time.sleep(0.3)
            left = remaining()
        if left:
            log.warning("sparkdock local backend: processes of job %s survived SIGKILL: %s", job_id, left)
        for pid, proc in leaders.items():
            _signal(pid, signal.SIGKILL, group=is_leader(pid))  # stragglers of the groups (no marker)
            if proc.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5)
        work = Path(state["work_dir"]) if state and state.get("work_dir") else self.job_dir(job_id) / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(self.secrets_dir(job_id), ignore_errors=True)

    async def adopt_cluster(self, job_id: str, state: dict[str, Any]) -> ClusterInfo | None:
        """Take over a cluster started before a restart: every recorded process must be alive (same start
        time) and the SQL endpoint must answer; no process is started."""
        if job_id in self._clusters and self._clusters[job_id].ready:
            cluster = self._clusters[job_id]
            return ClusterInfo(job_id=job_id, endpoints=self._endpoints(cluster.state), state=cluster.state,
                               credentials=await asyncio.to_thread(self.credentials, job_id))
        try:
            records = state["processes"]
            ports = state["ports"]
            procs = {c: _Proc(c, int(r["pid"]), r.get("start_time")) for c, r in records.items()}
            sql_port = int(ports["sql"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if state.get("instance") not in (None, self.instance):
            return None
        if not procs or not all(p.alive() for p in procs.values()):
            return None
        if not {"master", "sql", "lab"} <= procs.keys():
            return None
        user = str(state.get("sql_user", "sparkdock"))
        credentials = await asyncio.to_thread(self.credentials, job_id)
        password = credentials.get("sql_password")
        try:
            await asyncio.to_thread(
                probes.wait_until,
                lambda: provisioning.quiet_probe_sql(LOOPBACK, sql_port, user, password, timeout=10),
                self.adopt_timeout, 1.0, "the SQL endpoint",
            )
        except probes.ProbeError as exc:
            log.warning("sparkdock local backend: cannot adopt job %s: %s", job_id, exc)
            return None
        self._clusters[job_id] = _Cluster(job_id, state=state, procs=procs, ready=True)
        return ClusterInfo(job_id=job_id, endpoints=self._endpoints(state), state=state, credentials=credentials)

    async def list_job_ids(self) -> set[str]:
        """Jobs with live processes carrying this instance's marker, or with a work folder left."""

        def scan() -> set[str]:
            ids = {job for job, _ in _marked_processes(self.instance).values()}
            jobs = self.data_dir / "jobs"
            with contextlib.suppress(OSError):
                ids |= {p.name for p in jobs.iterdir() if (p / "work").is_dir()}
            return ids

        return await asyncio.to_thread(scan)

    async def logs(self, job_id: str, component: str, tail: int | None = None) -> str:
        """Logs of ``master``, ``worker-N``, ``sql``, ``lab`` or ``driver`` from ``logs/<component>.log``
        (kept after the cluster stops). ``KeyError`` for an unknown component."""
        path = self.job_dir(job_id) / "logs" / f"{component}.log"
        if component not in _FIXED_COMPONENTS and not (_WORKER_RE.match(component)
                                                       and await asyncio.to_thread(path.is_file)):
            raise KeyError(component)
        return await asyncio.to_thread(tail_lines, path, tail)

    async def sql_activity(self, job_id: str, state: dict[str, Any]) -> SqlActivity | None:
        """Read from the Thrift Server's application UI on loopback."""
        port = (state.get("ports") or {}).get("sql_ui")
        if not port:
            return None
        answer = await asyncio.to_thread(read_sql_activity, f"http://{LOOPBACK}:{port}")
        return sql_activity_of(answer)

    async def health(self, job_id: str, state: dict[str, Any]) -> dict[str, ComponentHealth]:
        """Whether each process of the cluster is alive (``/proc``, the same start time), read off the event
        loop in one pass; a dead one's message has its exit status (or signal) and its last log line, and says
        "out of memory" when its log shows an ``OutOfMemoryError`` or it exited with Spark's code 52."""
        cluster = self._clusters.get(job_id)
        if cluster is not None:
            procs = dict(cluster.procs)
        else:
            try:
                procs = {c: _Proc(c, int(r["pid"]), r.get("start_time"))
                         for c, r in (state.get("processes") or {}).items()}
            except (KeyError, TypeError, ValueError):
                procs = {}
        return await asyncio.to_thread(self._health_sync, job_id, procs)

    def _health_sync(self, job_id: str, procs: dict[str, _Proc]) -> dict[str, ComponentHealth]:
        rotate_dir(self.job_dir(job_id) / "logs", self.log_policy)  # the processes append: copy-truncate
        found: dict[str, ComponentHealth] = {}
        for component, proc in procs.items():
            if component == "driver" or proc.alive():
                found[component] = ComponentHealth(True)
                continue
            found[component] = self._ended(job_id, component, proc)
        return found

    def _ended(self, job_id: str, component: str, proc: _Proc) -> ComponentHealth:
        """How a dead process ended: its status when this backend started it, its last log lines."""
        status = proc.exit_status()
        how = f"process (pid {proc.pid}) exited"
        if status is not None and status < 0:
            how += f" (killed by signal {-status})"
        elif status is not None:
            how += f" with status {status}"
        tail = self._log_tail(job_id, component, 20)
        if status == SPARK_OOM_EXIT or "OutOfMemoryError" in tail:
            return ComponentHealth(False, out_of_memory_text(component, how), oom=True)
        last = tail.strip().splitlines()[-1][:300] if tail.strip() else ""
        return ComponentHealth(False, f"the {component} {how}" + (f": {last}" if last else ""))

    async def watch(self, on_health: HealthCallback) -> None:
        """Every ``watch_interval`` seconds, report once each process of a ready cluster that died."""
        while True:
            for job_id, cluster in list(self._clusters.items()):
                if not cluster.ready:
                    continue
                for component, proc in list(cluster.procs.items()):
                    if component in cluster.reported or proc.alive():
                        continue
                    if self._clusters.get(job_id) is not cluster:  # stopped meanwhile
                        break
                    cluster.reported.add(component)
                    status = proc.exit_status()
                    last = self._log_tail(job_id, component, 1).strip()
                    message = f"the {component} process (pid {proc.pid}) exited"
                    message += f" with status {status}" if status is not None else ""
                    message += f": {last}" if last else ""
                    try:
                        result = on_health(job_id, component, False, message)
                        if inspect.isawaitable(result):
                            await result
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("sparkdock local backend: health callback failed")
            self.watch_passes += 1
            await asyncio.sleep(self.watch_interval)

    async def run_application(
        self, job_id: str, cluster: ClusterInfo, app: StagedApp, report: Reporter
    ) -> AppResult:
        """Run ``spark-submit`` (client mode) of ``app`` against the cluster's master; output in
        ``logs/driver.log``. Progress comes from the driver's UI REST API. Cancellation kills the
        driver's process group and propagates."""
        state = cluster.state
        report = provisioning.safe_reporter(report)
        env = self._env()
        await self._runtime(env)
        job_dir = self.job_dir(job_id)
        logs_dir = job_dir / "logs"
        log_path = logs_dir / "driver.log"
        workdir = job_dir / "work" / "driver"

        def prepare() -> Path:
            (workdir / "tmp").mkdir(parents=True, exist_ok=True)
            logs_dir.mkdir(parents=True, exist_ok=True)
            return provisioning.driver_secret_file(self.secrets_dir(cluster.job_id), cluster.job_id)

        try:
            (ui_port,) = await asyncio.to_thread(_pick_ports, 1)
            secret = await asyncio.to_thread(prepare)
        except OSError as exc:
            raise BackendError(52, f"the local launcher cannot prepare the driver of {job_id}: {exc}",
                               component="driver") from exc
        env["SPARK_LOCAL_DIRS"] = str(workdir / "tmp")
        cmd = roles.driver_command(
            spark_home=self.spark_home or str(state.get("spark_home")), python=self.python,
            master_url=str(state["master_url"]), host=LOOPBACK, app_file=str(app.file),
            worker_memory=state.get("worker_memory", "1g"), worker_cores=int(state.get("worker_cores", 1)),
            app_type=app.type, args=app.args, name=f"sparkdock-{job_id}", bind_host=LOOPBACK,
            ui_port=ui_port, extra_conf={**self.spark_conf, **app.conf}, properties_file=str(secret),
        )
        report("StartingDriver", f"spark-submit of {app.file.name} on {state['master_url']}")
        proc = await asyncio.to_thread(self._spawn, job_id, "driver", cmd, env, logs_dir, None, str(workdir))
        self._drivers[job_id] = proc
        assert proc.popen is not None
        try:
            await self._follow_driver(proc, f"http://{LOOPBACK}:{ui_port}", report, log_path)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._kill_driver, proc, workdir))
            self._drivers.pop(job_id, None)
            raise
        self._drivers.pop(job_id, None)
        await asyncio.to_thread(_remove_workdir, workdir)
        status = proc.popen.returncode
        if status < 0:  # killed by a signal: report it the shell's way
            status = 128 - status
        output = await asyncio.to_thread(_attempt_output, log_path, DRIVER_TAIL_LINES)
        return AppResult(exit_status=status, output_tail=output, log_path=log_path)

    async def _follow_driver(self, proc: _Proc, ui: str, report: Reporter, log_path: Path) -> None:
        """Until the driver ends, report its Spark jobs and tasks (from its UI) whenever they change, and rotate
        its log when it is full."""
        assert proc.popen is not None
        last_progress: dict[str, int] | None = None
        next_poll = time.monotonic() + self.progress_interval
        while proc.popen.poll() is None:
            await asyncio.sleep(0.25)
            if time.monotonic() < next_poll:
                continue
            next_poll = time.monotonic() + self.progress_interval
            with contextlib.suppress(OSError):  # a rotation that cannot be done now is tried again next time
                await asyncio.to_thread(rotate_copytruncate, log_path, self.log_policy)
            progress = await asyncio.to_thread(_driver_progress, ui)
            if progress is not None and progress != last_progress:
                last_progress = progress
                report("Running", f"jobs {progress['jobs_done']}/{progress['jobs_total']}, "
                       f"tasks {progress['tasks_done']}/{progress['tasks_total']}", progress=dict(progress))

    def _kill_driver(self, proc: _Proc, workdir: Path) -> None:
        _signal(proc.pid, signal.SIGTERM, group=True)
        assert proc.popen is not None
        try:
            proc.popen.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL, group=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
        _signal(proc.pid, signal.SIGKILL, group=True)  # leftovers of the group (Python workers)
        _remove_workdir(workdir)

    async def close(self) -> None:
        """Forget the clusters (they keep running and can be adopted by the next backend)."""
        self._clusters.clear()


def _remove_workdir(workdir: Path) -> None:
    """Remove a driver's work folder, and the job's ``work/`` when nothing else is left in it."""
    shutil.rmtree(workdir, ignore_errors=True)
    with contextlib.suppress(OSError):
        workdir.parent.rmdir()


def _attempt_output(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the driver's output in this attempt (its log gathers every attempt; each
    starts with the launcher's "starting driver" line)."""
    text = tail_lines(path, lines)
    marker = text.rfind("----- sparkdock: starting driver at ")
    if marker < 0:
        return text
    return text[text.find("\n", marker) + 1:]


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _driver_progress(ui: str) -> dict[str, int] | None:
    """Jobs and tasks of the driver's application from its UI REST API, or ``None`` if it has no UI yet."""
    try:
        apps = _get_json(f"{ui}/api/v1/applications")
        if not apps:
            return None
        jobs = _get_json(f"{ui}/api/v1/applications/{apps[0]['id']}/jobs")
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    done = sum(1 for j in jobs if j.get("status") in ("SUCCEEDED", "FAILED"))
    tasks_total = sum(int(j.get("numTasks", 0)) for j in jobs)
    tasks_done = sum(int(j.get("numCompletedTasks", 0)) + int(j.get("numSkippedTasks", 0)) for j in jobs)
    return {"jobs_done": done, "jobs_total": len(jobs), "tasks_done": tasks_done, "tasks_total": tasks_total}


class _LocalParts(provisioning.ClusterParts):
    """The local primitives of one cluster: a process a component, ports of 127.0.0.1, the job's folders."""

    def __init__(self, backend: LocalBackend, cluster: _Cluster, plan: provisioning.ClusterPlan) -> None:
        super().__init__(plan)
        self.backend = backend
        self.cluster = cluster
        self.job_id = plan.job_id
        self.job_dir = backend.job_dir(plan.job_id)
        self.secrets = backend.secrets_dir(plan.job_id)
        self.env: dict[str, str] = {}
        self.spark_home = ""
        self.jar: str | None = None

    @property
    def ports(self) -> dict[str, int]:
        return self.cluster.state["ports"]

    async def prepare(self, report: Reporter) -> None:
        """``CheckingRuntime``: the data folder, Java and pyspark; then the job's folders, ports, the SQL
        authenticator and the secrets folder."""
        plan = self.plan
        report("CheckingRuntime", "Checking Java and pyspark")
        await self.backend.check()
        self.env = self.backend._env()
        rt = await self.backend._runtime(self.env)
        self.spark_home = rt.spark_home
        work = self.job_dir / "work"
        try:
            picked = await asyncio.to_thread(self._make_folders_and_pick_ports, work)
        except OSError as exc:
            raise BackendError(52, f"the local launcher cannot prepare job {self.job_id}: {exc}",
                               phase="CreatingContainers") from exc
        self.jar = await asyncio.to_thread(self.backend._auth_jar, rt, self.env)
        await asyncio.to_thread(provisioning.write_secret_files, plan, self.secrets)
        self.env["SPARK_LOCAL_DIRS"] = str(work / "tmp")
        spec = plan.spec
        self.cluster.state = {
            "backend": self.backend.name,
            "instance": self.backend.instance,
            "job_dir": str(self.job_dir),
            "work_dir": str(work),
            "spark_home": rt.spark_home,
            "python": self.backend.python,
            "master_url": f"spark://{LOOPBACK}:{picked['master']}",
            "ports": picked,
            "processes": {},
            "sql_user": plan.sql_user,
            "sql_auth": "CUSTOM" if self.jar else "NONE",
            "workers": spec.workers,
            "worker_cores": spec.worker_cores,
            "worker_memory": spec.worker_memory,
        }

    def _make_folders_and_pick_ports(self, work: Path) -> dict[str, int]:
        for sub in ("tmp", "sql", "lab/notebooks", "lab/ipython", "lab/runtime"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        (self.job_dir / "logs").mkdir(parents=True, exist_ok=True)
        return dict(zip(("master", "master_ui", "sql", "sql_ui", "lab"), _pick_ports(5), strict=True))

    def _command(self, component: str) -> tuple[roles.RoleCommand, dict[str, str] | None]:
        """The command line of a component and the environment it adds (no secret: those are in its file)."""
        spec, work, ports = self.plan.spec, self.job_dir / "work", self.ports
        master_url = self.cluster.state["master_url"]
        props = str(provisioning.secret_file(self.secrets, component))
        common = {"spark_home": self.spark_home, "master_url": master_url, "host": LOOPBACK,
                  "properties_file": props}
        if component == "master":
            return roles.master_command(spark_home=self.spark_home, host=LOOPBACK, port=ports["master"],
                                        webui_port=ports["master_ui"], properties_file=props), None
        if component.startswith("worker-"):
            return roles.worker_command(**common, cores=spec.worker_cores, memory=spec.worker_memory,
                                        work_dir=str(work / component), webui_port=0), None
        if component == "sql":
            return roles.sql_command(
                **common, work_dir=str(work / "sql"), worker_memory=spec.worker_memory,
                worker_cores=spec.worker_cores, port=ports["sql"], bind_host=LOOPBACK, ui_port=ports["sql_ui"],
                auth_jar=self.jar, python=self.backend.python, extra_conf=self.backend.spark_conf), None
        return self._lab_command(props)

    def _lab_command(self, props: str) -> tuple[roles.RoleCommand, dict[str, str]]:
        spec, work = self.plan.spec, self.job_dir / "work"
        cmd = roles.lab_command(
            python=self.backend.python, master_url=self.cluster.state["master_url"], host=LOOPBACK,
            root_dir=str(work / "lab" / "notebooks"), ipython_dir=str(work / "lab" / "ipython"),
            worker_memory=spec.worker_memory, worker_cores=spec.worker_cores, port=self.ports["lab"],
            bind_host=LOOPBACK, extra_conf={**self.backend.spark_conf, "spark.ui.port": "0"},
            properties_file=props)
        # The lab must not load sparkdock itself (it would manage this installation's jobs too).
        argv = [*cmd.argv, "--ServerApp.jpserver_extensions=sparkdock=False"]
        return (roles.RoleCommand(cmd.role, argv, cmd.env, cmd.cwd),
                {"JUPYTER_RUNTIME_DIR": str(work / "lab" / "runtime")})

    async def start(self, component: str) -> None:
        cmd, extra_env = self._command(component)
        if component == "lab":
            await asyncio.to_thread(roles.write_lab_startup, str(self.job_dir / "work" / "lab" / "ipython"))
        proc = await asyncio.to_thread(self.backend._spawn, self.job_id, component, cmd, self.env,
                                       self.job_dir / "logs", extra_env)
        self.cluster.procs[component] = proc
        self.cluster.state["processes"][component] = proc.as_state()

    async def exited(self, components: Sequence[str]) -> dict[str, str]:
        gone: dict[str, str] = {}
        for component in components:
            proc = self.cluster.procs.get(component)
            if proc is None or proc.alive():
                continue
            status = proc.exit_status()
            gone[component] = f"the {component} process exited" + (
                f" with status {status}" if status is not None else "")
        return gone

    async def address(self, component: str) -> tuple[str, int] | None:
        return LOOPBACK, self.ports["master_ui" if component == "master" else component]

    async def last_logs(self, component: str, lines: int) -> str | None:
        return await asyncio.to_thread(self.backend._log_tail, self.job_id, component, lines)

    async def remove(self) -> None:
        await self.backend.stop_cluster(self.job_id, self.cluster.state)

    def state(self) -> dict[str, Any]:
        return self.cluster.state
