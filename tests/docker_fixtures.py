"""Session fixtures for tests that need a Docker engine and the sparkdock image.

Import the fixtures into a test module (``from docker_fixtures import docker_image  # noqa: F401``).
``docker_image`` checks that the engine answers and that the image is up to date (``scripts/build-image.sh
--check``), as ``make test`` has made sure before pytest starts; only when it is not (pytest run by hand) does it
run ``scripts/setup-docker.sh``. When that fails the test is skipped with the reason, or fails when ``CI=true``
(a CI machine must be able to run the Docker tests).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("SPARKDOCK_TEST_IMAGE", "sparkdock/spark:0.1.0")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Docker tests cannot run on CI: {reason}")
    pytest.skip(reason)


def _image_ready() -> bool:
    """The engine answers and ``IMAGE`` carries the content hash of today's docker/ and cluster/ sources."""
    try:  # --check also fails when the engine does not answer
        check = [str(REPO / "scripts" / "build-image.sh"), "--check", IMAGE]
        return subprocess.run(["bash", *check], capture_output=True, timeout=60, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The sparkdock image tag, after making sure the engine answers and the image is up to date."""
    if shutil.which("bash") is None:
        _unavailable("bash is needed to run scripts/setup-docker.sh")
    if _image_ready():
        return IMAGE
    try:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "setup-docker.sh"), IMAGE],
            capture_output=True, text=True, timeout=1800, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"scripts/setup-docker.sh could not run: {exc}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        _unavailable(f"scripts/setup-docker.sh failed (exit {proc.returncode}):\n{tail}")
    return IMAGE


def build_broken_image(client: Any, base: str, role: str, tag: str, exit_code: int = 3) -> str:
    """Build ``tag``: ``base`` except that ``role`` exits at once with ``exit_code`` after saying it is broken on
    purpose (built locally: no registry needed). Remove it with ``client.images.remove(tag, force=True)``."""
    dockerfile = f"""
FROM {base}
USER root
RUN printf '%s\\n' '#!/bin/sh' \\
    'if [ "$1" = {role} ]; then echo "sparkdock test: {role} is broken on purpose" >&2; exit {exit_code}; fi' \\
    'exec python -m sparkdock.cluster.entrypoint "$@"' > /usr/local/bin/broken-entry \\
 && chmod +x /usr/local/bin/broken-entry
USER 185:185
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/usr/local/bin/broken-entry"]
"""
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


#: Run inside a worker container: make the Spark worker daemon's JVM the kernel OOM killer's first choice (an
#: executor JVM beside it is left alone), then allocate until the container's memory limit is reached.
_STARVE = """\
import glob
for p in glob.glob('/proc/[0-9]*'):
    try:
        if b'deploy.worker.Worker' in open(p + '/cmdline', 'rb').read():
            open(p + '/oom_score_adj', 'w').write('1000')
    except OSError:
        pass
chunks = []
while True:
    chunks.append(bytearray(8 << 20))
"""


def starve_worker(client: Any, container_id: str, headroom_mb: int = 64) -> None:
    """Kill a worker container's JVM for memory, as the kernel does: its memory limit is set just above what it
    uses (``docker update``), then a process in it allocates. The worker JVM is killed, the container exits with
    137 and the engine records ``State.OOMKilled``."""
    worker = client.containers.get(container_id)
    used = client.api.stats(worker.id, stream=False)["memory_stats"]["usage"]
    limit = used + headroom_mb * 2**20
    worker.update(mem_limit=limit, memswap_limit=limit)
    worker.exec_run(["python3", "-c", _STARVE], user="185:185")


def stop_engine(timeout: float = 60.0) -> None:
    """Stop dockerd (SIGTERM) and wait until its process is gone. With ``live-restore`` (scripts/docker-engine.sh
    sets it) the containers keep running. Needs root, as the engine script does."""
    import time

    running = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, check=False)
    assert running.returncode == 0, "no dockerd process to stop (is the engine run by this machine?)"
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
    deadline = time.monotonic() + timeout
    while subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"dockerd did not stop within {timeout:g} s"
        time.sleep(0.2)


def start_engine() -> None:
    """Start the engine again the way ``make test`` does (scripts/docker-engine.sh: it waits until it answers)."""
    out = subprocess.run(["bash", str(REPO / "scripts" / "docker-engine.sh")], capture_output=True, text=True,
                         timeout=180, check=False)
    assert out.returncode == 0, f"the Docker engine did not come back:\n{out.stdout}\n{out.stderr}"
