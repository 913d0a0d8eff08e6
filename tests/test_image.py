"""Tests of the sparkdock image (docker/Dockerfile), built by scripts/setup-docker.sh.

The session fixture ``docker_image`` makes sure the engine answers and the image is up to date. Outside CI, a
machine where that is impossible skips these tests; with CI=true it fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from docker_fixtures import docker_image  # noqa: F401 - session fixture

REPO = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("SPARKDOCK_TEST_IMAGE", "sparkdock/spark:0.1.0")

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def image(docker_image: str) -> str:  # noqa: F811
    """The image tag, once the session's ``docker_image`` made sure it is built and up to date."""
    return docker_image


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
    env = {"SPARK_MASTER_URL": "spark://m:7077"}
    out = _run(image, "--dry-run", "sql", env=env)
    cmd = json.loads(out)
    assert cmd["argv"][0].endswith("/pyspark/bin/spark-submit")
    assert "--driver-class-path" in cmd["argv"]
    assert "/opt/sparkdock/lib/sparkdock-auth.jar" in cmd["argv"]
    assert "pw" not in cmd["argv"]
    assert cmd["cwd"] == "/opt/sparkdock/work/sql"
