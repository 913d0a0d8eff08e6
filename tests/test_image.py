"""Tests of the sparkdock image (docker/Dockerfile), built by scripts/setup-docker.sh.

The fixture brings up the Docker engine, the base image and the sparkdock image. Outside CI, a machine
where that is impossible skips these tests; with CI=true it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("SPARKDOCK_TEST_IMAGE", "sparkdock/spark:0.1.0")

pytestmark = pytest.mark.docker


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def image() -> str:
    """The image tag, after scripts/setup-docker.sh made sure it is built and up to date."""
    problem = None
    if shutil.which("docker") is None and os.geteuid() != 0:
        problem = "no docker client and not root"
    else:
        done = subprocess.run(["bash", str(REPO / "scripts" / "setup-docker.sh"), IMAGE],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            problem = (f"scripts/setup-docker.sh failed ({done.returncode}):\n"
                       f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if problem:
        if _in_ci():
            pytest.fail(f"the Docker engine or image could not be brought up in CI: {problem}")
        pytest.skip(f"Docker is not available here: {problem}")
    return IMAGE


def _run(image: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    cmd = ["docker", "run", "--rm"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    done = subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} {args}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def test_image_labels(image: str) -> None:
    out = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True)
    labels = json.loads(out.stdout)[0]["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["io.sparkdock.pyspark"] == "4.3.0"
    assert len(labels["io.sparkdock.context-hash"]) == 16


def test_image_runs_pyspark(image: str) -> None:
    code = "import pyspark, os; print(pyspark.__version__); print(os.environ['SPARK_HOME'])"
    out = _run(image, "python", "-c", code)
    version, spark_home = out.split()
    assert version == "4.3.0"
    assert spark_home.endswith("/site-packages/pyspark")
    java = _run(image, "sh", "-c", "java -version 2>&1")
    assert '"17.' in java


def test_image_has_auth_jar(image: str) -> None:
    out = _run(image, "python", "-c",
               "import zipfile; "
               "print('\\n'.join(zipfile.ZipFile('/opt/sparkdock/lib/sparkdock-auth.jar').namelist()))")
    assert "io/sparkdock/auth/SparkdockPasswdAuthenticator.class" in out.split()


def test_image_only_sparkdock_cluster_is_importable(image: str) -> None:
    out = _run(image, "python", "-c",
               "import sparkdock.cluster.roles, sparkdock.cluster.probes, sparkdock.spark.errors; "
               "import impala.dbapi, jupyterlab, pandas; "
               "import importlib.util as u; print(u.find_spec('pydantic') is None)")
    assert out.strip() == "True"


def test_image_entrypoint_dry_run(image: str) -> None:
    env = {"SPARKDOCK_SQL_PASSWORD": "pw", "SPARK_MASTER_URL": "spark://m:7077"}
    out = _run(image, "--dry-run", "sql", env=env)
    cmd = json.loads(out)
    assert cmd["argv"][0].endswith("/pyspark/bin/spark-submit")
    assert "--driver-class-path" in cmd["argv"]
    assert "/opt/sparkdock/lib/sparkdock-auth.jar" in cmd["argv"]
    assert "pw" not in cmd["argv"]
    assert cmd["cwd"] == "/opt/sparkdock/work/sql"
