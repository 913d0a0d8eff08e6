"""Command lines and Spark configuration of every role of a sparkdock cluster.

This module is the single source of truth for how each process of a cluster is started. It is used
both inside the image (by :mod:`sparkdock.cluster.entrypoint`) and on the host (by the local backend),
so it depends on the standard library only and every function takes its inputs explicitly: no
function here reads the environment or touches the file system, except :func:`write_lab_startup`.

Roles:

``master``
    Spark standalone Master; its web UI is the cluster's "Spark UI" (``/json/`` gives its status).
``worker``
    Spark standalone Worker with a given number of cores and memory.
``sql``
    Spark Thrift Server (HiveServer2 protocol), the cluster's SQL endpoint, protected by the sparkdock
    password authenticator (the password is in its properties file).
``lab``
    JupyterLab whose kernels get a lazy ``spark`` session on the cluster (see
    :func:`write_lab_startup`). Its token is in its properties file, read by ``lab_config.py``.
``driver``
    ``spark-submit`` of a Python file, or of a SQL script run by :mod:`sparkdock.cluster.sql_runner`.

Sharing a standalone cluster: by default a standalone application takes every core of the cluster
and keeps it. The applications started here (SQL endpoint, lab kernels, drivers) therefore use
dynamic allocation with shuffle tracking, one core per executor, no executor kept when idle, and an
executor memory that fits a worker; see :func:`shared_app_conf`.

Secrets: every builder takes ``properties_file``, the role's 0600 Spark properties file written by
:mod:`sparkdock.cluster.properties` (the cluster's ``spark.authenticate.secret``, and the SQL password or the
lab token for those roles). Only its path is ever on a command line or in an environment variable.

Each builder returns a :class:`RoleCommand`: the argv, the environment variables to *add* to the
caller's environment, and the working directory (or ``None``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sparkdock.cluster.properties import PROPERTIES_ENV

__all__ = [
    "AUTH_CLASS",
    "DEFAULT_PORTS",
    "LAB_STARTUP_FILENAME",
    "ROLES",
    "THRIFT_SERVER_CLASS",
    "RoleCommand",
    "container_memory_limit",
    "daemon_memory",
    "default_spark_home",
    "driver_command",
    "executor_memory_mb",
    "format_memory",
    "lab_command",
    "lab_config_path",
    "lab_startup_source",
    "master_command",
    "parse_memory_mb",
    "py_runner_path",
    "shared_app_conf",
    "sql_command",
    "sql_runner_path",
    "worker_command",
    "write_lab_startup",
]

#: Every role the image's entrypoint knows.
ROLES: tuple[str, ...] = ("master", "worker", "sql", "lab", "driver")

#: Main class of the Spark Thrift Server.
THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"

#: The HiveServer2 CUSTOM authenticator shipped in the image's ``sparkdock-auth.jar``.
AUTH_CLASS = "io.sparkdock.auth.SparkdockPasswdAuthenticator"

#: Default ports of each role inside a container.
DEFAULT_PORTS: dict[str, int] = {
    "master": 7077,
    "master_ui": 8080,
    "worker_ui": 8081,
    "sql": 10000,
    "sql_ui": 4040,
    "lab": 8888,
    "driver_ui": 4040,
}

#: Heap of the master and worker daemons (SPARK_DAEMON_MEMORY); small so containers stay small.
DAEMON_MEMORY_MB = 256
#: Heap of the Thrift Server's driver.
SQL_DRIVER_MEMORY_MB = 768
#: Heap of a lab kernel's or a batch driver's JVM.
APP_DRIVER_MEMORY_MB = 512
#: Smallest executor heap Spark accepts comfortably (it refuses less than ~450 MiB).
MIN_EXECUTOR_MEMORY_MB = 512
#: Seconds an idle executor is kept before it is given back to the cluster.
EXECUTOR_IDLE_TIMEOUT_S = 15
#: Seconds an executor holding shuffle data (or cached data) is kept when idle.
SHUFFLE_TRACKING_TIMEOUT_S = 30
CACHED_EXECUTOR_IDLE_TIMEOUT_S = 120

#: File name of the IPython startup file written for the lab role.
LAB_STARTUP_FILENAME = "00-sparkdock-spark.py"

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNIT_MB = {"k": 1 / 1024, "": 1 / (1024 * 1024), "m": 1, "g": 1024, "t": 1024 * 1024}


@dataclass(frozen=True)
class RoleCommand:
    """How to start one process of a cluster.

    Attributes:
        role: the role name (one of :data:`ROLES`).
        argv: the full command line; ``argv[0]`` is an absolute path or a program on ``PATH``.
        env: environment variables to add to (override in) the caller's environment.
        cwd: working directory, or ``None`` to keep the caller's.
    """

    role: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


# ---------------------------------------------------------------------------------------------
# memory helpers
# ---------------------------------------------------------------------------------------------


def parse_memory_mb(value: str | int) -> int:
    """Return a memory amount in MiB.

    Accepts an int (MiB) or a Spark/Docker style string: ``"512m"``, ``"1g"``, ``"1.5g"``,
    ``"2GiB"``, ``"1024"`` (a bare number is MiB, as in Spark's ``--memory``).

    Raises:
        ValueError: the value is not a positive memory amount.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid memory amount: {value!r}")
    if isinstance(value, int):
        mb = value
    else:
        m = _MEMORY_RE.match(value)
        if not m:
            raise ValueError(f"invalid memory amount: {value!r} (expected e.g. '512m' or '1g')")
        number, unit = float(m.group(1)), m.group(2).lower()
        if unit == "" and value.strip().lower().endswith("b"):
            mb = int(number * _UNIT_MB[""])
        elif unit == "":
            mb = int(number)
        else:
            mb = int(number * _UNIT_MB[unit])
    if mb <= 0:
        raise ValueError(f"memory amount must be positive: {value!r}")
    return mb


def format_memory(mb: int) -> str:
    """Format MiB the way Spark and Docker accept it: ``"1g"`` when a whole GiB, else ``"768m"``."""
    return f"{mb // 1024}g" if mb % 1024 == 0 else f"{mb}m"


def daemon_memory(role: str) -> str:
    """The heap (SPARK_DAEMON_MEMORY / driver memory) of a role's main JVM, e.g. ``"256m"``."""
    if role in ("master", "worker"):
        return format_memory(DAEMON_MEMORY_MB)
    if role == "sql":
        return format_memory(SQL_DRIVER_MEMORY_MB)
    if role in ("lab", "driver"):
        return format_memory(APP_DRIVER_MEMORY_MB)
    raise ValueError(f"unknown role: {role!r}")


def executor_memory_mb(worker_memory: str | int, worker_cores: int) -> int:
    """Executor heap (MiB) such that one executor per core fits in a worker.

    Executors have one core each, so a worker of ``worker_cores`` cores hosts up to that many
    executors. The heap is ``worker_memory / worker_cores``, but at least
    :data:`MIN_EXECUTOR_MEMORY_MB` (then fewer executors fit) and at most the worker's memory.
    """
    mem = parse_memory_mb(worker_memory)
    if worker_cores < 1:
        raise ValueError("worker_cores must be >= 1")
    return min(mem, max(MIN_EXECUTOR_MEMORY_MB, mem // worker_cores))


def container_memory_limit(role: str, worker_memory: str | int = "1g", worker_cores: int = 1) -> str:
    """The memory limit (Docker ``--memory`` form, e.g. ``"1664m"``) a role's container needs.

    Args:
        role: one of :data:`ROLES`.
        worker_memory: memory a worker offers to executors (Spark's ``--memory``).
        worker_cores: cores of a worker (one executor, and one Python worker, per core).

    The worker's limit is its daemon heap, the executors' heaps (``worker_memory``) and, per core,
    room for JVM off-heap memory and a PySpark Python worker. Other roles get their JVM heap plus
    overhead (and, for the lab, room for Jupyter and a few kernels).
    """
    mem = parse_memory_mb(worker_memory)
    if role == "master":
        mb = DAEMON_MEMORY_MB + 256
    elif role == "worker":
        mb = DAEMON_MEMORY_MB + mem + 384 * max(1, worker_cores) + 128
    elif role == "sql":
        mb = SQL_DRIVER_MEMORY_MB + 512
    elif role == "lab":
        mb = 2048
    elif role == "driver":
        mb = APP_DRIVER_MEMORY_MB + 512
    else:
        raise ValueError(f"unknown role: {role!r}")
    return format_memory(mb)


# ---------------------------------------------------------------------------------------------
# Spark configuration
# ---------------------------------------------------------------------------------------------


#: CPUs a role's container may use, beside the worker (which gets its ``worker_cores``): the master and the lab
#: are light; the SQL endpoint and an application's driver plan queries and collect results.
ROLE_CPUS: dict[str, float] = {"master": 1.0, "sql": 2.0, "lab": 1.0, "driver": 2.0}


def container_cpu_limit(role: str, worker_cores: int = 1) -> float:
    """The CPUs a role's container may use (Docker ``--cpus``): a worker its cores, the others :data:`ROLE_CPUS`."""
    if role == "worker":
        return float(max(1, worker_cores))
    if role not in ROLE_CPUS:
        raise ValueError(f"unknown role: {role!r}")
    return ROLE_CPUS[role]


def shared_app_conf(
    *,
    worker_memory: str | int,
    worker_cores: int,
    python: str | None = None,
    driver_host: str | None = None,
    driver_bind_address: str | None = None,
    max_executors: int | None = None,
) -> dict[str, str]:
    """Spark conf that lets several applications share one standalone cluster.

    Dynamic allocation with shuffle tracking (no external shuffle service is needed), no executor
    at start and none kept once idle for :data:`EXECUTOR_IDLE_TIMEOUT_S` seconds, one core per
    executor and an executor heap that fits a worker. So an idle SQL endpoint or lab kernel holds no
    core, and a second application gets executors.

    Args:
        worker_memory: memory of one worker (e.g. ``"1g"``).
        worker_cores: cores of one worker.
        python: Python executable for PySpark on executors and driver (``spark.pyspark.python``).
        driver_host: address executors use to reach the driver (``spark.driver.host``).
        driver_bind_address: address the driver binds (``spark.driver.bindAddress``).
        max_executors: cap on executors for the application (default: no cap).
    """
    conf = {
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
        "spark.dynamicAllocation.shuffleTracking.timeout": f"{SHUFFLE_TRACKING_TIMEOUT_S}s",
        "spark.dynamicAllocation.minExecutors": "0",
        "spark.dynamicAllocation.initialExecutors": "0",
        "spark.dynamicAllocation.executorIdleTimeout": f"{EXECUTOR_IDLE_TIMEOUT_S}s",
        "spark.dynamicAllocation.cachedExecutorIdleTimeout": f"{CACHED_EXECUTOR_IDLE_TIMEOUT_S}s",
        "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
        "spark.executor.cores": "1",
        "spark.executor.memory": format_memory(executor_memory_mb(worker_memory, worker_cores)),
        "spark.scheduler.mode": "FAIR",
        "spark.ui.showConsoleProgress": "false",
    }
    if max_executors is not None:
        conf["spark.dynamicAllocation.maxExecutors"] = str(max_executors)
    if python:
        conf["spark.pyspark.python"] = python
        conf["spark.pyspark.driver.python"] = python
    if driver_host:
        conf["spark.driver.host"] = driver_host
    if driver_bind_address:
        conf["spark.driver.bindAddress"] = driver_bind_address
    return conf


def _conf_args(conf: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    return args


def _properties_args(properties_file: str | None) -> list[str]:
    return ["--properties-file", properties_file] if properties_file else []


def _bin(spark_home: str, name: str) -> str:
    return str(Path(spark_home) / "bin" / name)


def _local_ip(address: str | None) -> dict[str, str]:
    """``SPARK_LOCAL_IP`` for a specific IP address (not a host name, not the wildcard)."""
    if not address:
        return {}
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return {}
    return {} if ip.is_unspecified else {"SPARK_LOCAL_IP": address}


def _daemon_env(host: str, extra_conf: Mapping[str, str] | None, opts_var: str) -> dict[str, str]:
    env = {"SPARK_DAEMON_MEMORY": daemon_memory("master"), "SPARK_NO_DAEMONIZE": "1", **_local_ip(host)}
    if extra_conf:
        env[opts_var] = " ".join(f"-D{k}={v}" for k, v in extra_conf.items())
    return env


# ---------------------------------------------------------------------------------------------
# roles
# ---------------------------------------------------------------------------------------------


def master_command(
    *,
    spark_home: str,
    host: str,
    port: int = DEFAULT_PORTS["master"],
    webui_port: int = DEFAULT_PORTS["master_ui"],
    extra_conf: Mapping[str, str] | None = None,
    properties_file: str | None = None,
) -> RoleCommand:
    """The Spark standalone Master.

    Args:
        spark_home: the Spark installation (pyspark's package folder).
        host: host name or address the master binds and advertises (``spark://host:port``).
            In Docker, the container's name on the cluster network; locally ``127.0.0.1``.
        port: the master's RPC port.
        webui_port: port of the web UI (the cluster's Spark UI, ``/json/`` for status).
        extra_conf: Spark properties for the master (passed as ``SPARK_MASTER_OPTS``: no secrets).
        properties_file: the role's properties file (the cluster's secret; see the module docstring).
    """
    argv = [
        _bin(spark_home, "spark-class"),
        "org.apache.spark.deploy.master.Master",
        "--host", host,
        "--port", str(port),
        "--webui-port", str(webui_port),
        *_properties_args(properties_file),
    ]
    return RoleCommand("master", argv, _daemon_env(host, extra_conf, "SPARK_MASTER_OPTS"))


def worker_command(
    *,
    spark_home: str,
    master_url: str,
    host: str,
    cores: int,
    memory: str | int,
    work_dir: str,
    webui_port: int = DEFAULT_PORTS["worker_ui"],
    port: int | None = None,
    extra_conf: Mapping[str, str] | None = None,
    properties_file: str | None = None,
) -> RoleCommand:
    """A Spark standalone Worker.

    Args:
        spark_home: the Spark installation.
        master_url: ``spark://host:port`` of the master.
        host: host name or address the worker binds and advertises.
        cores: cores offered to executors.
        memory: memory offered to executors (``"1g"``, ``"768m"`` or MiB).
        work_dir: the worker's directory for executor logs and files.
        webui_port: port of the worker's web UI (0 = any free port).
        port: RPC port (``None`` = any free port).
        extra_conf: Spark properties for the worker (passed as ``SPARK_WORKER_OPTS``: no secrets).
        properties_file: the role's properties file (the cluster's secret).
    """
    if cores < 1:
        raise ValueError("a worker needs at least 1 core")
    argv = [
        _bin(spark_home, "spark-class"),
        "org.apache.spark.deploy.worker.Worker",
        "--host", host,
        "--cores", str(cores),
        "--memory", format_memory(parse_memory_mb(memory)),
        "--work-dir", work_dir,
        "--webui-port", str(webui_port),
    ]
    if port is not None:
        argv += ["--port", str(port)]
    argv += _properties_args(properties_file)
    argv.append(master_url)
    conf = {
        "spark.worker.cleanup.enabled": "true",
        "spark.worker.cleanup.interval": "600",
        "spark.worker.cleanup.appDataTtl": "3600",
        **(extra_conf or {}),
    }
    return RoleCommand("worker", argv, _daemon_env(host, conf, "SPARK_WORKER_OPTS"))


def sql_command(
    *,
    spark_home: str,
    master_url: str,
    host: str,
    work_dir: str,
    worker_memory: str | int,
    worker_cores: int,
    port: int = DEFAULT_PORTS["sql"],
    bind_host: str = "0.0.0.0",
    ui_port: int = DEFAULT_PORTS["sql_ui"],
    auth_jar: str | None = None,
    python: str | None = None,
    extra_conf: Mapping[str, str] | None = None,
    properties_file: str | None = None,
) -> RoleCommand:
    """The Spark Thrift Server (SQL endpoint, HiveServer2 binary protocol).

    Args:
        spark_home: the Spark installation.
        master_url: ``spark://host:port`` of the master.
        host: address executors use to reach this driver (``spark.driver.host``).
        work_dir: holds the warehouse (``warehouse/``), the Derby metastore (``metastore_db``) and
            ``derby.log``; also the process's working directory.
        worker_memory: memory of one worker, to size executors (see :func:`shared_app_conf`).
        worker_cores: cores of one worker.
        port: the HiveServer2 (thrift) port.
        bind_host: address the thrift port binds.
        ui_port: port of the application's Spark UI.
        auth_jar: path of ``sparkdock-auth.jar``; when given, logins need the password that the
            properties file holds under ``spark.sparkdock.sql.password`` (CUSTOM authentication).
            When ``None`` the endpoint accepts any login (``NONE``): use only on a private address.
        python: Python executable for PySpark UDFs on executors.
        extra_conf: more Spark properties (override the defaults; no secrets: they are on the command line).
        properties_file: the role's properties file (the cluster's secret and the SQL password).
    """
    work = Path(work_dir)
    metastore = work / "metastore_db"
    conf = shared_app_conf(
        worker_memory=worker_memory,
        worker_cores=worker_cores,
        python=python,
        driver_host=host,
        driver_bind_address=bind_host if bind_host else None,
    )
    conf.update({
        "spark.sql.warehouse.dir": str(work / "warehouse"),
        "spark.ui.port": str(ui_port),
        "spark.sql.catalogImplementation": "hive",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work}",
    })
    conf.update(extra_conf or {})
    argv = [
        _bin(spark_home, "spark-submit"),
        "--master", master_url,
        "--name", "sparkdock-sql",
        "--class", THRIFT_SERVER_CLASS,
        "--driver-memory", daemon_memory("sql"),
        *_properties_args(properties_file),
    ]
    if auth_jar:
        argv += ["--driver-class-path", auth_jar]
    argv += _conf_args(conf)
    argv.append("spark-internal")
    hiveconf = {
        "hive.server2.thrift.port": str(port),
        "hive.server2.thrift.bind.host": bind_host,
        "hive.server2.transport.mode": "binary",
        "javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={metastore};create=true",
        "hive.metastore.warehouse.dir": str(work / "warehouse"),
    }
    if auth_jar:
        hiveconf["hive.server2.authentication"] = "CUSTOM"
        hiveconf["hive.server2.custom.authentication.class"] = AUTH_CLASS
    else:
        hiveconf["hive.server2.authentication"] = "NONE"
    for key, value in hiveconf.items():
        argv += ["--hiveconf", f"{key}={value}"]
    # spark-submit sizes the Thrift Server's heap from SPARK_DAEMON_MEMORY when it is set.
    env = {"SPARK_NO_DAEMONIZE": "1", "SPARK_DAEMON_MEMORY": daemon_memory("sql"), **_local_ip(bind_host)}
    return RoleCommand("sql", argv, env, cwd=str(work))


def lab_command(
    *,
    python: str,
    master_url: str,
    host: str,
    root_dir: str,
    ipython_dir: str,
    worker_memory: str | int,
    worker_cores: int,
    port: int = DEFAULT_PORTS["lab"],
    bind_host: str = "0.0.0.0",
    base_url: str = "/",
    extra_conf: Mapping[str, str] | None = None,
    properties_file: str | None = None,
) -> RoleCommand:
    """JupyterLab whose kernels get a ``spark`` session on the cluster.

    Call :func:`write_lab_startup` with the same ``ipython_dir`` before starting it.

    Args:
        python: the Python executable with jupyterlab, ipykernel and pyspark.
        master_url: ``spark://host:port`` of the master (``SPARK_MASTER_URL`` for kernels).
        host: address executors use to reach a kernel's driver (``spark.driver.host``).
        root_dir: the notebooks folder.
        ipython_dir: ``IPYTHONDIR`` of the kernels (holds the startup file).
        worker_memory: memory of one worker, to size executors.
        worker_cores: cores of one worker.
        port: the lab's port.
        bind_host: address the lab binds.
        base_url: the server's base URL.
        extra_conf: more Spark properties for kernels' sessions (no secrets).
        properties_file: the role's properties file. The lab reads its token there
            (``spark.sparkdock.lab.token``, through :func:`lab_config_path`) and kernels' sessions start with
            it (``PYSPARK_SUBMIT_ARGS``), so they hold the cluster's secret. Without it, Jupyter makes up a
            token and prints it in its log.
    """
    conf = shared_app_conf(
        worker_memory=worker_memory,
        worker_cores=worker_cores,
        python=python,
        driver_host=host,
        driver_bind_address=bind_host if bind_host else None,
    )
    conf["spark.driver.memory"] = daemon_memory("lab")
    conf.update(extra_conf or {})
    argv = [
        python, "-m", "jupyterlab",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.ip={bind_host}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--ServerApp.base_url={base_url}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--config={lab_config_path()}",
    ]
    env = {
        "SPARK_MASTER_URL": master_url,
        "IPYTHONDIR": ipython_dir,
        "SPARKDOCK_SPARK_CONF": _json_dumps(conf),
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
    }
    env.update(_local_ip(bind_host))
    if properties_file:
        env[PROPERTIES_ENV] = properties_file
        env["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {shlex.quote(properties_file)} pyspark-shell"
    return RoleCommand("lab", argv, env, cwd=root_dir)


def lab_config_path() -> str:
    """Path of the bundled Jupyter config of the lab role (``lab_config.py`` next to this module): it sets the
    lab's token from the role's properties file."""
    return str(Path(__file__).with_name("lab_config.py"))


def sql_runner_path() -> str:
    """Path of the bundled SQL script runner (``sql_runner.py`` next to this module)."""
    return str(Path(__file__).with_name("sql_runner.py"))


def py_runner_path() -> str:
    """Path of the bundled application runner (``py_runner.py`` next to this module), the file ``spark-submit``
    runs for every Python and SQL application."""
    return str(Path(__file__).with_name("py_runner.py"))


def driver_command(
    *,
    spark_home: str,
    python: str,
    master_url: str,
    host: str,
    app_file: str,
    worker_memory: str | int,
    worker_cores: int,
    app_type: str = "pyspark",
    args: Sequence[str] = (),
    name: str = "sparkdock-driver",
    bind_host: str | None = None,
    ui_port: int = DEFAULT_PORTS["driver_ui"],
    extra_conf: Mapping[str, str] | None = None,
    properties_file: str | None = None,
) -> RoleCommand:
    """``spark-submit`` of an automated job's driver (client deploy mode).

    Args:
        spark_home: the Spark installation.
        python: Python executable of the driver and of executors' Python workers.
        master_url: ``spark://host:port`` of the master.
        host: address executors use to reach the driver (``spark.driver.host``).
        app_file: the ``.py`` file (``app_type="pyspark"``) or the SQL script (``app_type="sql"``,
            run statement by statement by the bundled ``sql_runner.py``).
        worker_memory: memory of one worker, to size executors.
        worker_cores: cores of one worker.
        app_type: ``"pyspark"`` or ``"sql"``.
        args: arguments of the application.
        name: the application's name in the Spark UI.
        bind_host: address the driver binds (``None``: Spark's default).
        ui_port: port of the application's Spark UI (Spark tries the next ones if busy).
        extra_conf: user Spark properties; they override the sharing defaults.
        properties_file: the cluster's properties file (its secret), read by ``spark-submit``.
    """
    if app_type not in ("pyspark", "sql"):
        raise ValueError(f"app_type must be 'pyspark' or 'sql', not {app_type!r}")
    conf = shared_app_conf(
        worker_memory=worker_memory,
        worker_cores=worker_cores,
        python=python,
        driver_host=host,
        driver_bind_address=bind_host,
    )
    conf["spark.ui.port"] = str(ui_port)
    conf.update(extra_conf or {})
    argv = [
        _bin(spark_home, "spark-submit"),
        "--master", master_url,
        "--deploy-mode", "client",
        "--name", name,
        "--driver-memory", conf.pop("spark.driver.memory", daemon_memory("driver")),
        *_properties_args(properties_file),
    ]
    argv += _conf_args(conf)
    # py_runner.py runs the application and makes sure its last output (why it failed) reaches the log
    if app_type == "sql":
        argv += [py_runner_path(), sql_runner_path(), app_file, *args]
    else:
        argv += [py_runner_path(), app_file, *args]
    env = {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, **_local_ip(bind_host)}
    return RoleCommand("driver", argv, env)


# ---------------------------------------------------------------------------------------------
# lab startup file
# ---------------------------------------------------------------------------------------------

_LAB_STARTUP = '''\
"""sparkdock: ``spark`` is a SparkSession on this cluster, created at first use.

Written by sparkdock.cluster.roles.write_lab_startup. The session connects to SPARK_MASTER_URL with the
conf in SPARKDOCK_SPARK_CONF (JSON). A kernel that never touches ``spark`` takes no executor.
"""


class _SparkdockLazySession:
    """Forwards every attribute to a SparkSession built on first use."""

    _session = None

    def _get(self):
        if type(self)._session is None:
            import json
            import os

            from pyspark.sql import SparkSession

            builder = SparkSession.builder.appName(os.environ.get("SPARKDOCK_APP_NAME", "sparkdock-lab"))
            master = os.environ.get("SPARK_MASTER_URL")
            if master:
                builder = builder.master(master)
            for key, value in json.loads(os.environ.get("SPARKDOCK_SPARK_CONF") or "{}").items():
                builder = builder.config(key, value)
            type(self)._session = builder.getOrCreate()
        return type(self)._session

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def __dir__(self):
        return dir(self._get())

    def __repr__(self):
        import os

        if type(self)._session is None:
            return "<SparkSession on %s, not started yet>" % os.environ.get("SPARK_MASTER_URL", "?")
        return repr(type(self)._session)


spark = _SparkdockLazySession()
del _SparkdockLazySession
'''


def lab_startup_source() -> str:
    """Source of the IPython startup file that defines the lazy ``spark`` session."""
    return _LAB_STARTUP


def write_lab_startup(ipython_dir: str) -> str:
    """Write the startup file into ``<ipython_dir>/profile_default/startup/``; return its path."""
    startup = Path(ipython_dir) / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    path = startup / LAB_STARTUP_FILENAME
    path.write_text(_LAB_STARTUP, encoding="utf-8")
    return str(path)


def _json_dumps(conf: Mapping[str, str]) -> str:
    import json

    return json.dumps(dict(conf), sort_keys=True)


def default_spark_home() -> str | None:
    """``SPARK_HOME`` if set, else the folder of an importable ``pyspark``, else ``None``."""
    if os.environ.get("SPARK_HOME"):
        return os.environ["SPARK_HOME"]
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))))
