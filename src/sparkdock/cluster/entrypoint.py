"""Entry point of the sparkdock image: ``python -m sparkdock.cluster.entrypoint ROLE [args]``.

The role's command line is built by :mod:`sparkdock.cluster.roles` from environment variables and
then ``exec``'d (the process is replaced, so signals reach Spark/Jupyter directly; the image runs
this under ``tini``). Usage::

    entrypoint [--dry-run] master  [extra Master args]
    entrypoint [--dry-run] worker  [extra Worker args]
    entrypoint [--dry-run] sql     [extra --hiveconf k=v ...]
    entrypoint [--dry-run] lab     [extra JupyterLab args]
    entrypoint [--dry-run] driver  APP_FILE [app args]     (a .py file, or a .sql script)
    entrypoint COMMAND [args]      any first word that is not a role is executed as it is
                                   (e.g. ``docker run IMAGE python -c '...'``)

``--dry-run`` prints the command as JSON (``{"argv", "env", "cwd"}``) instead of running it.

Environment (defaults in brackets):

=============================  =================================================================
SPARK_HOME                     Spark installation [pyspark's package folder]
SPARKDOCK_HOST                 name/address others reach this container at [the host name]
SPARKDOCK_BIND_HOST            address services bind [0.0.0.0]
SPARK_MASTER_URL               master URL for worker/sql/lab/driver [spark://sparkdock-master:7077]
SPARK_MASTER_PORT              master RPC port [7077]
SPARK_MASTER_WEBUI_PORT        master web UI port [8080]
SPARK_WORKER_WEBUI_PORT        worker web UI port [8081]
SPARKDOCK_WORKER_CORES         cores of each worker [1]
SPARKDOCK_WORKER_MEMORY        memory of each worker [1g]
SPARKDOCK_SQL_PORT             SQL endpoint (HiveServer2) port [10000]
SPARKDOCK_PROPERTIES_FILE      the role's Spark properties file (mode 0600, mounted read-only): the
                               cluster's ``spark.authenticate.secret`` and, for sql and lab, the
                               SQL password or the lab token; see sparkdock.cluster.properties
SPARKDOCK_SQL_AUTH             ``password`` (default: the auth jar, checks the file's
                               ``spark.sparkdock.sql.password``, refuses all without one) or
                               ``none`` (any login accepted)
SPARKDOCK_AUTH_JAR             [/opt/sparkdock/lib/sparkdock-auth.jar]
SPARKDOCK_SPARK_UI_PORT        application UI port of sql/driver [4040]
SPARKDOCK_LAB_PORT             lab port [8888]
SPARKDOCK_LAB_BASE_URL         lab base URL [/]
SPARKDOCK_LAB_ROOT             notebooks folder [/opt/sparkdock/notebooks]
SPARKDOCK_WORK_DIR             work folder: worker/, sql/, ipython/ below it [/opt/sparkdock/work]
SPARKDOCK_SPARK_CONF           JSON object of extra Spark properties for sql/lab/driver
SPARKDOCK_APP_TYPE             driver: ``pyspark`` or ``sql`` [from the file's extension]
SPARKDOCK_APP_NAME             driver: application name [sparkdock-driver]
SPARKDOCK_PYTHON               Python of drivers/executors [this interpreter]
=============================  =================================================================

Secrets are never read from the environment: only the properties file's path is.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sparkdock.cluster import properties, roles


def _env(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value if value.strip() else default


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _env(env, name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"sparkdock entrypoint: {name} must be an integer, not {raw!r}") from None


def _extra_conf(env: Mapping[str, str]) -> dict[str, str]:
    raw = env.get("SPARKDOCK_SPARK_CONF", "").strip()
    if not raw:
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"sparkdock entrypoint: SPARKDOCK_SPARK_CONF is not JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise SystemExit("sparkdock entrypoint: SPARKDOCK_SPARK_CONF must be a JSON object")
    return {str(k): str(v) for k, v in conf.items()}


def _properties_file(env: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """The role's properties file named by ``SPARKDOCK_PROPERTIES_FILE`` and its properties."""
    path = env.get(properties.PROPERTIES_ENV, "").strip()
    if not path:
        return None, {}
    try:
        return path, properties.read(path)
    except OSError as exc:
        raise SystemExit(f"sparkdock entrypoint: cannot read {properties.PROPERTIES_ENV} {path}: "
                         f"{exc.strerror}") from None


def build_command(role: str, args: Sequence[str], env: Mapping[str, str]) -> roles.RoleCommand:
    """Build the :class:`~sparkdock.cluster.roles.RoleCommand` of ``role`` from ``env``.

    ``args`` are appended to the role's command line (for ``driver``: the application file and
    its arguments). Raises ``SystemExit`` with a message on bad input.
    """
    spark_home = env.get("SPARK_HOME") or roles.default_spark_home()
    if not spark_home and role != "lab":
        raise SystemExit("sparkdock entrypoint: SPARK_HOME is not set and pyspark is not importable")
    spark_home = spark_home or ""
    python = _env(env, "SPARKDOCK_PYTHON", sys.executable)
    host = _env(env, "SPARKDOCK_HOST", socket.gethostname())
    bind = _env(env, "SPARKDOCK_BIND_HOST", "0.0.0.0")
    master_url = _env(env, "SPARK_MASTER_URL", "spark://sparkdock-master:7077")
    cores = _int(env, "SPARKDOCK_WORKER_CORES", 1)
    memory = _env(env, "SPARKDOCK_WORKER_MEMORY", "1g")
    work = Path(_env(env, "SPARKDOCK_WORK_DIR", "/opt/sparkdock/work"))
    conf = _extra_conf(env)
    props_file, props = _properties_file(env)
    if props_file is None:
        print(f"sparkdock entrypoint: warning: {properties.PROPERTIES_ENV} is not set: the {role} runs without "
              "the cluster's secret (no spark.authenticate)", file=sys.stderr)

    if role == "master":
        cmd = roles.master_command(
            spark_home=spark_home,
            host=host,
            port=_int(env, "SPARK_MASTER_PORT", roles.DEFAULT_PORTS["master"]),
            webui_port=_int(env, "SPARK_MASTER_WEBUI_PORT", roles.DEFAULT_PORTS["master_ui"]),
            properties_file=props_file,
        )
    elif role == "worker":
        cmd = roles.worker_command(
            spark_home=spark_home,
            master_url=master_url,
            host=host,
            cores=cores,
            memory=memory,
            work_dir=str(work / "worker"),
            webui_port=_int(env, "SPARK_WORKER_WEBUI_PORT", roles.DEFAULT_PORTS["worker_ui"]),
            properties_file=props_file,
        )
    elif role == "sql":
        auth = _env(env, "SPARKDOCK_SQL_AUTH", "password").lower()
        if auth not in ("password", "none"):
            raise SystemExit("sparkdock entrypoint: SPARKDOCK_SQL_AUTH must be 'password' or 'none'")
        jar: str | None = None
        if auth == "password":
            jar = _env(env, "SPARKDOCK_AUTH_JAR", "/opt/sparkdock/lib/sparkdock-auth.jar")
            if not Path(jar).is_file():
                raise SystemExit(f"sparkdock entrypoint: the SQL auth jar {jar} is missing")
            if not props.get(properties.SQL_PASSWORD_KEY):
                print(f"sparkdock entrypoint: warning: no {properties.SQL_PASSWORD_KEY} in "
                      f"{properties.PROPERTIES_ENV}, every SQL login will be refused (set SPARKDOCK_SQL_AUTH=none "
                      "to disable authentication)", file=sys.stderr)
        cmd = roles.sql_command(
            spark_home=spark_home,
            master_url=master_url,
            host=host,
            work_dir=str(work / "sql"),
            worker_memory=memory,
            worker_cores=cores,
            port=_int(env, "SPARKDOCK_SQL_PORT", roles.DEFAULT_PORTS["sql"]),
            bind_host=bind,
            ui_port=_int(env, "SPARKDOCK_SPARK_UI_PORT", roles.DEFAULT_PORTS["sql_ui"]),
            auth_jar=jar,
            python=python,
            extra_conf=conf,
            properties_file=props_file,
        )
    elif role == "lab":
        if not props.get(properties.LAB_TOKEN_KEY):
            print(f"sparkdock entrypoint: warning: no {properties.LAB_TOKEN_KEY} in {properties.PROPERTIES_ENV}; "
                  "Jupyter makes up a token and prints it in the log", file=sys.stderr)
        cmd = roles.lab_command(
            python=python,
            master_url=master_url,
            host=host,
            root_dir=_env(env, "SPARKDOCK_LAB_ROOT", "/opt/sparkdock/notebooks"),
            ipython_dir=str(work / "ipython"),
            worker_memory=memory,
            worker_cores=cores,
            port=_int(env, "SPARKDOCK_LAB_PORT", roles.DEFAULT_PORTS["lab"]),
            bind_host=bind,
            base_url=_env(env, "SPARKDOCK_LAB_BASE_URL", "/"),
            extra_conf=conf,
            properties_file=props_file,
        )
    elif role == "driver":
        if not args:
            raise SystemExit("sparkdock entrypoint: usage: driver APP_FILE [args...]")
        app_file, app_args = args[0], list(args[1:])
        default_type = "sql" if app_file.lower().endswith(".sql") else "pyspark"
        return roles.driver_command(
            spark_home=spark_home,
            python=python,
            master_url=master_url,
            host=host,
            app_file=app_file,
            worker_memory=memory,
            worker_cores=cores,
            app_type=_env(env, "SPARKDOCK_APP_TYPE", default_type),
            args=app_args,
            name=_env(env, "SPARKDOCK_APP_NAME", "sparkdock-driver"),
            ui_port=_int(env, "SPARKDOCK_SPARK_UI_PORT", roles.DEFAULT_PORTS["driver_ui"]),
            extra_conf=conf,
            properties_file=props_file,
        )
    else:
        raise SystemExit(f"sparkdock entrypoint: unknown role {role!r} (one of {', '.join(roles.ROLES)})")
    return roles.RoleCommand(cmd.role, [*cmd.argv, *args], cmd.env, cmd.cwd)


def prepare(cmd: roles.RoleCommand) -> None:
    """Create the folders a command needs (and the lab's IPython startup file)."""
    if cmd.cwd:
        Path(cmd.cwd).mkdir(parents=True, exist_ok=True)
    if cmd.role == "worker":
        work_dir = cmd.argv[cmd.argv.index("--work-dir") + 1]
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    if cmd.role == "lab":
        roles.write_lab_startup(cmd.env["IPYTHONDIR"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the entrypoint; only returns on ``--help``, ``--dry-run`` or an error."""
    args = list(sys.argv[1:] if argv is None else argv)
    dry_run = False
    if args and args[0] == "--dry-run":
        dry_run, args = True, args[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    role, rest = args[0], args[1:]
    if role not in roles.ROLES:
        # Not a role: run the command as it is (e.g. `docker run IMAGE python -c ...`).
        if dry_run:
            print(json.dumps({"argv": args, "env": {}, "cwd": None}))
            return 0
        os.execvp(args[0], args)
    cmd = build_command(role, rest, os.environ)
    if dry_run:
        print(json.dumps({"argv": cmd.argv, "env": cmd.env, "cwd": cmd.cwd}, indent=1))
        return 0
    prepare(cmd)
    os.environ.update(cmd.env)
    if cmd.cwd:
        os.chdir(cmd.cwd)
    print(f"sparkdock entrypoint: {role}: {' '.join(cmd.argv)}", file=sys.stderr, flush=True)
    os.execvp(cmd.argv[0], cmd.argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
