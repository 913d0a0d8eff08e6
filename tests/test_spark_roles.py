"""Tests of sparkdock.cluster: role command lines and conf, the entrypoint, the SQL runner, and a real
local cluster (master + worker + Thrift Server with the password authenticator) started from roles.py: the
suite's shared cluster (tests/local_cluster.py), with drivers submitted by hand from roles.driver_command.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from local_cluster import Started, closed_port
from sparkdock.cluster import entrypoint, lab_config, probes, properties, roles
from sparkdock.cluster.sql_runner import split_statements

SPARK_HOME = "/opt/spark-home"
PY = "/venv/bin/python"
REPO = Path(__file__).resolve().parents[1]
JAVA_SRC = REPO / "src" / "sparkdock" / "cluster" / "java" / "SparkdockPasswdAuthenticator.java"


# ---------------------------------------------------------------------------------------------
# unit checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mb"),
    [("512m", 512), ("1g", 1024), ("1.5g", 1536), ("2GiB", 2048), ("1024", 1024), (768, 768),
     ("1048576k", 1024), ("2 GB", 2048)],
)
def test_parse_memory(value: str | int, mb: int) -> None:
    assert roles.parse_memory_mb(value) == mb


@pytest.mark.parametrize("bad", ["", "abc", "-1g", "0", "1x", True])
def test_parse_memory_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        roles.parse_memory_mb(bad)  # type: ignore[arg-type]


def test_format_memory_and_executor_memory() -> None:
    assert roles.format_memory(1024) == "1g"
    assert roles.format_memory(768) == "768m"
    assert roles.executor_memory_mb("2g", 2) == 1024
    assert roles.executor_memory_mb("1g", 4) == 512  # floor: Spark refuses tiny heaps
    assert roles.executor_memory_mb("384m", 1) == 384  # never above the worker's memory
    with pytest.raises(ValueError):
        roles.executor_memory_mb("1g", 0)


def test_container_memory_limit() -> None:
    for role in roles.ROLES:
        limit = roles.parse_memory_mb(roles.container_memory_limit(role, "1g", 1))
        assert limit >= 512
    worker = roles.parse_memory_mb(roles.container_memory_limit("worker", "2g", 2))
    # daemon heap + executors' heaps + per-core overhead
    assert worker >= roles.DAEMON_MEMORY_MB + 2048 + 2 * 256
    assert roles.parse_memory_mb(roles.container_memory_limit("worker", "4g", 1)) > worker
    with pytest.raises(ValueError):
        roles.container_memory_limit("nope")


def test_shared_app_conf_lets_applications_share() -> None:
    conf = roles.shared_app_conf(worker_memory="2g", worker_cores=2, python=PY, driver_host="lab")
    assert conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    assert conf["spark.dynamicAllocation.minExecutors"] == "0"
    assert conf["spark.dynamicAllocation.initialExecutors"] == "0"
    assert conf["spark.dynamicAllocation.executorIdleTimeout"].endswith("s")
    assert conf["spark.executor.cores"] == "1"
    assert conf["spark.executor.memory"] == "1g"
    assert conf["spark.pyspark.python"] == PY
    assert conf["spark.driver.host"] == "lab"
    assert "spark.cores.max" not in conf


def test_properties_file_is_private_and_round_trips(tmp_path: Path) -> None:
    values = {"spark.authenticate.secret": "a=b:c#d!e f\\g", "k with space": " lead", "u": "é\nline"}
    old = os.umask(0)  # the file is 0600 whatever the umask
    try:
        path = properties.write(tmp_path / "p.properties", values)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert properties.read(path) == values
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    java_style = "a = 1\nb:2\nc 3\n# comment\n! comment\nd=multi\\\n   line\ne=\\u00e9\n"
    assert properties.loads(java_style) == {"a": "1", "b": "2", "c": "3", "d": "multiline", "e": "é"}


def test_control_plane_conf_closes_the_submission_paths() -> None:
    assert properties.control_plane_conf("s3") == {
        "spark.authenticate": "true", "spark.authenticate.secret": "s3", "spark.network.crypto.enabled": "true",
        "spark.master.rest.enabled": "false", "spark.ui.killEnabled": "false"}
    with pytest.raises(ValueError):
        properties.control_plane_conf("")
    assert len(properties.new_secret()) >= 43 and properties.new_secret() != properties.new_secret()


def test_master_command() -> None:
    cmd = roles.master_command(spark_home=SPARK_HOME, host="m", port=7000, webui_port=8000,
                               properties_file="/s/cluster.properties")
    assert cmd.argv[:2] == [f"{SPARK_HOME}/bin/spark-class", "org.apache.spark.deploy.master.Master"]
    assert cmd.argv[2:] == ["--host", "m", "--port", "7000", "--webui-port", "8000",
                            "--properties-file", "/s/cluster.properties"]
    assert cmd.env["SPARK_DAEMON_MEMORY"] == "256m"
    assert "SPARK_LOCAL_IP" not in cmd.env  # a container name, not an address
    local = roles.master_command(spark_home=SPARK_HOME, host="127.0.0.1")
    assert local.env["SPARK_LOCAL_IP"] == "127.0.0.1"


def test_worker_command() -> None:
    cmd = roles.worker_command(spark_home=SPARK_HOME, master_url="spark://m:7077", host="w1", cores=2,
                               memory="1536m", work_dir="/w", webui_port=0, properties_file="/s/c.properties")
    argv = cmd.argv
    assert argv[argv.index("--properties-file") + 1] == "/s/c.properties"
    assert argv[1] == "org.apache.spark.deploy.worker.Worker"
    assert argv[argv.index("--cores") + 1] == "2"
    assert argv[argv.index("--memory") + 1] == "1536m"
    assert argv[argv.index("--work-dir") + 1] == "/w"
    assert argv[-1] == "spark://m:7077"
    assert "-Dspark.worker.cleanup.enabled=true" in cmd.env["SPARK_WORKER_OPTS"]
    with pytest.raises(ValueError):
        roles.worker_command(spark_home=SPARK_HOME, master_url="x", host="w", cores=0, memory="1g",
                             work_dir="/w")


def _hiveconf(argv: list[str]) -> dict[str, str]:
    out = {}
    for i, arg in enumerate(argv):
        if arg == "--hiveconf":
            key, _, value = argv[i + 1].partition("=")
            out[key] = value
    return out


def _conf(argv: list[str]) -> dict[str, str]:
    out = {}
    for i, arg in enumerate(argv):
        if arg == "--conf":
            key, _, value = argv[i + 1].partition("=")
            out[key] = value
    return out


def test_sql_command_with_password_auth() -> None:
    cmd = roles.sql_command(spark_home=SPARK_HOME, master_url="spark://m:7077", host="sql",
                            work_dir="/work/sql", worker_memory="1g", worker_cores=1, port=10001,
                            auth_jar="/opt/auth.jar", properties_file="/s/sql.properties",
                            python=PY, extra_conf={"spark.sql.shuffle.partitions": "4"})
    argv = cmd.argv
    assert argv[argv.index("--properties-file") + 1] == "/s/sql.properties"
    assert argv.index("--properties-file") < argv.index("spark-internal")
    assert argv[0] == f"{SPARK_HOME}/bin/spark-submit"
    assert argv[argv.index("--class") + 1] == roles.THRIFT_SERVER_CLASS
    assert argv[argv.index("--driver-class-path") + 1] == "/opt/auth.jar"
    assert argv.index("spark-internal") < argv.index("--hiveconf")
    hive = _hiveconf(argv)
    assert hive["hive.server2.thrift.port"] == "10001"
    assert hive["hive.server2.thrift.bind.host"] == "0.0.0.0"
    assert hive["hive.server2.authentication"] == "CUSTOM"
    assert hive["hive.server2.custom.authentication.class"] == roles.AUTH_CLASS
    assert "/work/sql/metastore_db" in hive["javax.jdo.option.ConnectionURL"]
    conf = _conf(argv)
    assert conf["spark.sql.warehouse.dir"] == "/work/sql/warehouse"
    assert conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.sql.shuffle.partitions"] == "4"
    assert cmd.cwd == "/work/sql"
    assert cmd.env["SPARK_DAEMON_MEMORY"] == roles.daemon_memory("sql")
    assert not any("PASSWORD" in a.upper() for a in argv)


def test_sql_command_without_auth() -> None:
    cmd = roles.sql_command(spark_home=SPARK_HOME, master_url="spark://m:7077", host="127.0.0.1",
                            work_dir="/w", worker_memory="1g", worker_cores=1, bind_host="127.0.0.1")
    assert "--driver-class-path" not in cmd.argv
    assert _hiveconf(cmd.argv)["hive.server2.authentication"] == "NONE"
    assert cmd.env["SPARK_LOCAL_IP"] == "127.0.0.1"


def test_lab_command_reads_its_token_from_the_properties_file(tmp_path: Path) -> None:
    """The token is in no argv and no environment variable: the lab's Jupyter config reads it from the role's
    file, and kernels start their sessions with the same file (the cluster's secret)."""
    props = tmp_path / "my lab.properties"
    properties.write(props, {**properties.control_plane_conf("the-secret"),
                             properties.LAB_TOKEN_KEY: "s3cret-token"})
    cmd = roles.lab_command(python=PY, master_url="spark://m:7077", host="lab", root_dir="/nb",
                            ipython_dir=str(tmp_path / "ipy"), worker_memory="1g", worker_cores=1,
                            port=9999, properties_file=str(props))
    assert cmd.argv[:3] == [PY, "-m", "jupyterlab"]
    assert "--no-browser" in cmd.argv and "--allow-root" in cmd.argv
    assert "--ServerApp.port=9999" in cmd.argv
    assert "--ServerApp.root_dir=/nb" in cmd.argv
    assert f"--config={roles.lab_config_path()}" in cmd.argv
    everything = " ".join(cmd.argv) + " ".join(cmd.env.values())
    assert "s3cret-token" not in everything and "the-secret" not in everything
    assert "JUPYTER_TOKEN" not in cmd.env
    assert cmd.env[properties.PROPERTIES_ENV] == str(props)
    assert cmd.env["PYSPARK_SUBMIT_ARGS"] == f"--properties-file '{props}' pyspark-shell"
    assert lab_config.lab_token(cmd.env) == "s3cret-token"
    assert lab_config.lab_token({}) is None  # no file: Jupyter's own default
    with pytest.raises(SystemExit, match="cannot read"):
        lab_config.lab_token({properties.PROPERTIES_ENV: str(tmp_path / "missing")})
    properties.write(props, properties.control_plane_conf("the-secret"))
    with pytest.raises(SystemExit, match="holds no"):
        lab_config.lab_token(cmd.env)
    assert cmd.env["SPARK_MASTER_URL"] == "spark://m:7077"
    conf = json.loads(cmd.env["SPARKDOCK_SPARK_CONF"])
    assert conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.driver.host"] == "lab"
    path = Path(roles.write_lab_startup(cmd.env["IPYTHONDIR"]))
    assert path.parent == tmp_path / "ipy" / "profile_default" / "startup"
    compile(path.read_text(), str(path), "exec")


def test_lab_startup_is_lazy() -> None:
    """Running the startup file defines ``spark`` without importing pyspark or starting a JVM."""
    check = "\nimport sys\nassert 'pyspark' not in sys.modules\nprint(repr(spark))\n"
    code = roles.lab_startup_source() + check
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SPARK_MASTER_URL": "spark://x:1"})
    assert out.returncode == 0, out.stderr
    assert "not started yet" in out.stdout


def test_driver_command() -> None:
    py = roles.driver_command(spark_home=SPARK_HOME, python=PY, master_url="spark://m:7077", host="d",
                              app_file="/app/job.py", args=["a", "b"], worker_memory="1g", worker_cores=1,
                              extra_conf={"spark.driver.memory": "1g", "spark.executor.memory": "600m"},
                              properties_file="/s/cluster.properties")
    assert py.argv[-4:] == [roles.py_runner_path(), "/app/job.py", "a", "b"]
    assert py.argv[py.argv.index("--properties-file") + 1] == "/s/cluster.properties"
    assert py.argv[py.argv.index("--driver-memory") + 1] == "1g"
    assert _conf(py.argv)["spark.executor.memory"] == "600m"  # user conf wins
    assert "spark.driver.memory" not in _conf(py.argv)
    sql = roles.driver_command(spark_home=SPARK_HOME, python=PY, master_url="spark://m:7077", host="d",
                               app_file="/app/q.sql", app_type="sql", worker_memory="1g", worker_cores=1)
    assert sql.argv[-3:] == [roles.py_runner_path(), roles.sql_runner_path(), "/app/q.sql"]
    assert Path(roles.sql_runner_path()).is_file() and Path(roles.py_runner_path()).is_file()
    with pytest.raises(ValueError):
        roles.driver_command(spark_home=SPARK_HOME, python=PY, master_url="m", host="d", app_file="x",
                             app_type="scala", worker_memory="1g", worker_cores=1)


def test_entrypoint_builds_roles_from_env(tmp_path: Path) -> None:
    props = properties.write(tmp_path / "sql.properties", {**properties.control_plane_conf("sec"),
                                                           properties.SQL_PASSWORD_KEY: "pw"})
    env = {
        "SPARK_HOME": SPARK_HOME, "SPARKDOCK_HOST": "sparkdock-x-worker-1",
        "SPARK_MASTER_URL": "spark://mm:7077",
        "SPARKDOCK_WORKER_CORES": "2", "SPARKDOCK_WORKER_MEMORY": "2g", "SPARKDOCK_WORK_DIR": str(tmp_path),
        properties.PROPERTIES_ENV: str(props), "SPARKDOCK_AUTH_JAR": str(JAVA_SRC), "SPARKDOCK_PYTHON": PY,
        "SPARKDOCK_SPARK_CONF": '{"spark.sql.shuffle.partitions": 3}',
    }
    worker = entrypoint.build_command("worker", ["--port", "7078"], env)
    assert worker.argv[worker.argv.index("--properties-file") + 1] == str(props)
    assert worker.argv[worker.argv.index("--cores") + 1] == "2"
    assert worker.argv[-2:] == ["--port", "7078"]
    assert worker.argv[worker.argv.index("--work-dir") + 1] == str(tmp_path / "worker")
    sql = entrypoint.build_command("sql", [], env)
    assert _hiveconf(sql.argv)["hive.server2.authentication"] == "CUSTOM"
    assert _conf(sql.argv)["spark.sql.shuffle.partitions"] == "3"
    assert _conf(sql.argv)["spark.executor.memory"] == "1g"
    assert not any(a == "pw" or "=pw" in a or "sec" in a for a in sql.argv)
    assert sql.argv[sql.argv.index("--properties-file") + 1] == str(props)
    no_auth = entrypoint.build_command("sql", [], {**env, "SPARKDOCK_SQL_AUTH": "none"})
    assert _hiveconf(no_auth.argv)["hive.server2.authentication"] == "NONE"
    drv = entrypoint.build_command("driver", ["/x/q.sql"], env)
    assert drv.argv[-2:] == [roles.sql_runner_path(), "/x/q.sql"]
    with pytest.raises(SystemExit):
        entrypoint.build_command("driver", [], env)
    with pytest.raises(SystemExit):
        entrypoint.build_command("sql", [], {**env, "SPARKDOCK_AUTH_JAR": "/nonexistent.jar"})
    with pytest.raises(SystemExit):
        entrypoint.build_command("worker", [], {**env, "SPARKDOCK_WORKER_CORES": "two"})
    with pytest.raises(SystemExit, match="cannot read"):
        entrypoint.build_command("master", [], {**env, properties.PROPERTIES_ENV: str(tmp_path / "gone")})


def test_entrypoint_cli_dry_run_and_passthrough(tmp_path: Path) -> None:
    props = properties.write(tmp_path / "lab.properties", {properties.LAB_TOKEN_KEY: "tok123"})
    env = {**os.environ, "SPARK_HOME": SPARK_HOME, properties.PROPERTIES_ENV: str(props), "SPARKDOCK_HOST": "h"}
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "sparkdock.cluster.entrypoint", "--dry-run", "lab"],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    shown = json.loads(out.stdout)
    assert shown["argv"][1:3] == ["-m", "jupyterlab"]
    assert "tok123" not in out.stdout
    ran = subprocess.run([sys.executable, "-m", "sparkdock.cluster.entrypoint", "echo", "hello", "there"],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    assert ran.stdout.strip() == "hello there"
    helped = subprocess.run([sys.executable, "-m", "sparkdock.cluster.entrypoint", "--help"],
                            capture_output=True, text=True, env=env, timeout=60, check=True)
    assert properties.PROPERTIES_ENV in helped.stdout


def test_split_statements() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (s STRING);  /* block; comment */
    INSERT INTO t VALUES ('a;b'), ("c;d"), ('it\\'s');
    SELECT `weird;name` FROM t;
    ;  -- only a comment
    """
    stmts = split_statements(script)
    assert len(stmts) == 3
    assert stmts[0].endswith("CREATE TABLE t (s STRING)")
    assert "'a;b'" in stmts[1] and '"c;d"' in stmts[1] and "'it\\'s'" in stmts[1]
    assert stmts[1].startswith("/* block; comment */")
    assert stmts[2] == "SELECT `weird;name` FROM t"
    assert split_statements("SELECT 1") == ["SELECT 1"]
    assert split_statements("  -- nothing\n ; ") == []


def test_alive_workers() -> None:
    status = {"workers": [{"state": "ALIVE"}, {"state": "DEAD"}, {"state": "alive"}]}
    assert probes.alive_workers(status) == 2
    assert probes.alive_workers({}) == 0


def test_probes_fail_fast_on_closed_ports() -> None:
    with closed_port() as port:
        _probes_fail_fast(port)


def _probes_fail_fast(port: int) -> None:
    with pytest.raises(probes.ProbeError):
        probes.probe_lab(f"http://127.0.0.1:{port}", "t", timeout=2)
    with pytest.raises(probes.ProbeError):
        probes.master_status(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(probes.ProbeError):
        probes.probe_sql("127.0.0.1", port, "u", "p", timeout=2)
    with pytest.raises(probes.ProbeError, match="not ready after"):
        probes.wait_until(lambda: probes.master_status(f"http://127.0.0.1:{port}", 1), timeout=1,
                          interval=0.2, what="master")


# ---------------------------------------------------------------------------------------------
# a real local cluster
# ---------------------------------------------------------------------------------------------


@dataclass
class LocalCluster:
    """What these tests need of a running cluster whose processes were started from roles.py."""

    work: Path
    spark_home: str
    master_url: str
    ui_url: str
    sql_port: int
    password: str
    properties: str  # the cluster's properties file: a driver needs its secret


@pytest.fixture(scope="module")
def cluster(shared_local_cluster: Started) -> LocalCluster:
    """The suite's shared local cluster (master + 1 worker of 2 cores + Thrift Server with the password
    authenticator), whose processes the local backend started from roles.py's command lines."""
    state = shared_local_cluster.info.state
    return LocalCluster(
        work=Path(state["work_dir"]), spark_home=state["spark_home"], master_url=state["master_url"],
        ui_url=f"http://127.0.0.1:{state['ports']['master_ui']}", sql_port=state["ports"]["sql"],
        password=shared_local_cluster.info.sql_password or "",
        properties=str(shared_local_cluster.backend.secrets_dir(shared_local_cluster.job_id) / "cluster.properties"),
    )


def _sql(c: LocalCluster, statement: str, fetch: bool = True) -> list[tuple[object, ...]]:
    """Run one statement; ``fetch=False`` for DDL/DML (impyla 0.24 fails fetching their empty result)."""
    from impala.dbapi import connect

    conn = connect(host="127.0.0.1", port=c.sql_port, auth_mechanism="PLAIN", user="alice",
                   password=c.password, timeout=120)
    try:
        cur = conn.cursor()
        cur.execute(statement)
        return list(cur.fetchall()) if fetch else []
    finally:
        conn.close()


def _sql_app(status: dict[str, object]) -> dict[str, object]:
    apps = [a for a in status.get("activeapps", []) if a.get("name") == "sparkdock-sql"]  # type: ignore[union-attr]
    assert len(apps) == 1, status.get("activeapps")
    return apps[0]  # type: ignore[no-any-return]


@pytest.mark.spark
def test_local_cluster_sql_endpoint(cluster: LocalCluster) -> None:
    status = probes.master_status(cluster.ui_url)
    assert status["status"] == "ALIVE"
    assert probes.alive_workers(status) == 1
    assert _sql_app(status)["state"] == "RUNNING"
    assert _sql(cluster, "SELECT sum(id) FROM range(1000000)") == [(499999500000,)]
    _sql(cluster, "DROP TABLE IF EXISTS t_roles", fetch=False)  # the cluster is shared: start afresh
    _sql(cluster, "CREATE TABLE t_roles (x INT) USING parquet", fetch=False)
    _sql(cluster, "INSERT INTO t_roles VALUES (1), (2), (3)", fetch=False)
    assert _sql(cluster, "SELECT count(*), sum(x) FROM t_roles") == [(3, 6)]
    assert (cluster.work / "sql" / "warehouse" / "t_roles").is_dir()
    assert (cluster.work / "sql" / "metastore_db").is_dir()


@pytest.mark.spark
def test_local_cluster_refuses_wrong_password(cluster: LocalCluster) -> None:
    with pytest.raises(probes.SQLAuthError):
        probes.probe_sql("127.0.0.1", cluster.sql_port, "alice", "wrong password", timeout=20)
    with pytest.raises(probes.SQLAuthError):
        probes.probe_sql("127.0.0.1", cluster.sql_port, "alice", None, timeout=20)
    probes.probe_sql("127.0.0.1", cluster.sql_port, "bob", cluster.password, timeout=20)


@pytest.mark.spark
def test_second_application_gets_executors(cluster: LocalCluster, tmp_path: Path) -> None:
    """After a query, the Thrift Server gives its executors back; a batch driver then runs."""
    assert _sql(cluster, "SELECT count(*) FROM range(100000)") == [(100000,)]

    def sql_idle() -> None:
        cores = _sql_app(probes.master_status(cluster.ui_url, 2))["cores"]
        if cores:
            raise probes.ProbeError(f"the SQL endpoint still holds {cores} cores")

    # test clusters give idle executors back within seconds (local_cluster.TEST_SPARK_CONF)
    probes.wait_until(sql_idle, timeout=120, interval=0.5, what="executor release")

    app = tmp_path / "job.py"
    out = tmp_path / "out.json"
    app.write_text(
        "import json, sys\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "n = spark.range(0, 1000, numPartitions=4).selectExpr('sum(id) AS s').collect()[0].s\n"
        "squares = spark.sparkContext.parallelize(range(10), 2).map(lambda x: x * x).sum()\n"
        "json.dump({'n': n, 'squares': squares}, open(sys.argv[1], 'w'))\n"
        "spark.stop()\n"
    )
    cmd = roles.driver_command(spark_home=cluster.spark_home, python=sys.executable,
                               master_url=cluster.master_url, host="127.0.0.1", bind_host="127.0.0.1",
                               app_file=str(app), args=[str(out)], worker_memory="1g", worker_cores=2,
                               ui_port=0, name="sparkdock-test-driver", properties_file=cluster.properties)
    done = subprocess.run(cmd.argv, env={**os.environ, **cmd.env}, capture_output=True, text=True,
                          timeout=240, start_new_session=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(out.read_text()) == {"n": 499500, "squares": 285}


def _submit_sql(cluster: LocalCluster, script: Path, cwd: Path) -> subprocess.Popen[str]:
    """spark-submit of a SQL script from roles.driver_command, in its own working folder."""
    cwd.mkdir()
    cmd = roles.driver_command(spark_home=cluster.spark_home, python=sys.executable,
                               master_url=cluster.master_url, host="127.0.0.1", bind_host="127.0.0.1",
                               app_file=str(script), app_type="sql", worker_memory="1g", worker_cores=2,
                               ui_port=0, properties_file=cluster.properties)
    return subprocess.Popen(cmd.argv, env={**os.environ, **cmd.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=cwd)


@pytest.mark.spark
def test_sql_script_driver(cluster: LocalCluster, tmp_path: Path) -> None:
    """A SQL script runs statement by statement and prints each result; a failing statement stops the script
    with exit status 1 and the runner's message. Both drivers run at the same time."""
    script = tmp_path / "q.sql"
    script.write_text("-- demo\nCREATE TEMPORARY VIEW v AS SELECT id FROM range(10);\n"
                      "SELECT sum(id) AS total FROM v;\nSELECT 'a;b' AS s;\n")
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT 1;\nSELECT * FROM no_such_table;\nSELECT 2;\n")
    good_proc, bad_proc = _submit_sql(cluster, script, tmp_path / "good"), _submit_sql(cluster, bad, tmp_path / "bad")
    try:
        out, err = good_proc.communicate(timeout=240)
        bad_out, bad_err = bad_proc.communicate(timeout=240)
    finally:
        for proc in (good_proc, bad_proc):
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    assert good_proc.returncode == 0, err[-4000:]
    lines = out.splitlines()
    assert "total" in lines and "45" in lines and "a;b" in lines

    # spark-submit's PythonRunner may merge the Python driver's stderr into stdout: look at both.
    runner_errors = [line for line in (bad_out + bad_err).splitlines() if "sql_runner:" in line]
    assert bad_proc.returncode == 1, runner_errors
    assert any("TABLE_OR_VIEW_NOT_FOUND" in line for line in runner_errors), runner_errors
    assert "[3/3]" not in bad_out


# ---------------------------------------------------------------------------------------------
# classification of a driver's end (pure function)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "output", "exit_code", "kernel"),
    [
        (0, "ERROR something scary", None, None),
        (1, "Traceback ...\nAssertionError: expected 3 rows", 18, 1),
        (1, "java.lang.IllegalArgumentException: requirement failed", 18, 1),
        (1, "pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: "
            "file:/data/x.parquet.", 18, 3),
        (1, "[TABLE_OR_VIEW_NOT_FOUND] The table or view `nope` cannot be found.", 18, 3),
        (1, "java.io.FileNotFoundException: /x (No such file or directory)", 18, 3),
        (1, "IntegrityError: integrity check failed: 3 duplicate keys", 18, 4),
        (1, "sparkdock: declared output missing: /out/result.parquet", 18, 5),
        (1, "java.lang.ClassNotFoundException: com.example.Missing", 18, 6),
        (1, "ModuleNotFoundError: No module named 'foo'", 18, 6),
        (1, "RuntimeError: boom", 18, 7),
        (1, "", 18, 2),
        (2, "spark-submit: bad option", 18, 2),
        (134, "# A fatal error has been detected by the Java Runtime Environment", 29, None),
        (-9, "", 16, None),  # killed from outside sparkdock (the kernel's OOM killer, or by hand)
        (137, "", 16, None),
        (-11, "", 29, None),
        (143, "", 29, None),
        # Spark's own out-of-memory code 52 (executor or driver) is 16, never sparkdock's 52
        (1, "org.apache.spark.SparkException: Job aborted due to stage failure: ExecutorLostFailure (executor 0 "
            "exited caused by one of the running tasks) Reason: Command exited with code 52", 16, None),
        (52, "ERROR SparkUncaughtExceptionHandler: Uncaught exception in thread", 16, None),
        (52, "Traceback (most recent call last):\n  File \"app.py\"\nSystemExit: 52", 18, 2),
        (137, "java.lang.OutOfMemoryError: Java heap space", 16, None),
        (1, "Exception in thread \"main\" java.lang.OutOfMemoryError: GC overhead limit exceeded", 16, None),
        (1, "WARN TaskSchedulerImpl: Initial job has not accepted any resources; check your cluster UI", 15,
         None),
    ],
)
def test_classify_driver(returncode: int, output: str, exit_code: int | None, kernel: int | None) -> None:
    from sparkdock.cluster.classify import classify_driver

    outcome = classify_driver(returncode, output)
    assert (outcome.exit_code, outcome.kernel_exit_code) == (exit_code, kernel), outcome
    assert outcome.reason


def test_classify_prefers_specific_causes() -> None:
    from sparkdock.cluster.classify import classify_driver

    # a missing table raised through an AssertionError wrapper is still a missing dataset
    out = "AssertionError\n[TABLE_OR_VIEW_NOT_FOUND] `t` cannot be found"
    assert classify_driver(1, out).kernel_exit_code == 3
    assert classify_driver(None, "").exit_code == 18
