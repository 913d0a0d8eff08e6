"""One id per test run, for every name the suite gives to backends and test-only images, and the removal of
what earlier runs left behind.

Names made here carry ``sdt<pid>x<random>``, where ``pid`` is the pytest process of the run. Two runs on one
host therefore never share a backend instance (containers, networks and processes are found by instance) or a
test-only image tag, and :func:`remove_leftovers` can tell a dead run's leftovers from a live run's resources.
It also removes what runs before this scheme left (their fixed names are listed in ``_LEGACY_*``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
from pathlib import Path

from sparkdock.backends.local import INSTANCE_ENV, _proc_env

RUN_ID = f"{os.getpid()}x{secrets.token_hex(2)}"
_PREFIX = "sdt"
_OURS = re.compile(rf"{_PREFIX}(\d+)x[0-9a-f]{{4}}")
_LEGACY_INSTANCES = re.compile(r"autotest|autotest-docker|test[0-9a-f]{6}|test-[0-9a-f]{8}")
_LEGACY_TAGS = {"sparkdock/spark:broken-master-test", "sparkdock/spark:broken-sql-test"}


def instance(name: str = "") -> str:
    """A backend instance name of this run, unique within it: ``sdt<pid>x<rand>[-name]-<hex>``."""
    middle = f"-{name}" if name else ""
    return f"{_PREFIX}{RUN_ID}{middle}-{secrets.token_hex(2)}"


def image_tag(name: str, repo: str = "sparkdock/spark") -> str:
    """A tag for a test-only image of this run, e.g. ``sparkdock/spark:broken-sql-sdt1234xab12``."""
    return f"{repo}:{name}-{_PREFIX}{RUN_ID}"


def _run_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pytest" in cmdline


def is_leftover(name: str) -> bool:
    """Whether ``name`` (an instance or an image tag) belongs to a test run that is no longer running."""
    if _LEGACY_INSTANCES.fullmatch(name) or name in _LEGACY_TAGS:
        return True
    m = _OURS.search(name)
    return bool(m) and not _run_alive(int(m.group(1)))


def _leftover_processes() -> list[int]:
    """Processes carrying the local backend's instance marker of a dead test run."""
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me
            and is_leftover(_proc_env(int(e)).get(INSTANCE_ENV, ""))]


def remove_leftover_processes() -> list[int]:
    """Kill the local-backend processes of dead test runs; returns their pids."""
    pids = _leftover_processes()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


def remove_leftover_docker(client) -> list[str]:
    """Remove the containers, networks, volumes and test-only images of dead test runs; returns what went."""
    gone: list[str] = []
    label = "sparkdock.instance"
    for c in client.containers.list(all=True, filters={"label": label}):
        if is_leftover(c.labels.get(label, "")):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)
                gone.append(f"container {c.name}")
    for n in client.networks.list(filters={"label": label}):
        if is_leftover(n.attrs.get("Labels", {}).get(label, "")):
            with contextlib.suppress(Exception):
                n.remove()
                gone.append(f"network {n.name}")
    for v in client.volumes.list(filters={"label": label}):
        if is_leftover((v.attrs.get("Labels") or {}).get(label, "")):
            with contextlib.suppress(Exception):
                v.remove(force=True)
                gone.append(f"volume {v.name}")
    for img in client.images.list():
        for tag in img.tags:
            if is_leftover(tag):
                with contextlib.suppress(Exception):
                    client.images.remove(tag, force=True)
                    gone.append(f"image {tag}")
    return gone
