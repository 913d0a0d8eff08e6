"""The suite's own hygiene (tests/testrun.py): what a dead run left is removed, what a live run owns is not."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest

import testrun
from docker_fixtures import docker_image  # noqa: F401 - session fixture


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _dead_run_instance() -> str:
    return f"sdt{_dead_pid()}x0a0a-old-beef"


def test_names_carry_the_run() -> None:
    assert testrun.instance("x").startswith(f"sdt{testrun.RUN_ID}-x-")
    assert testrun.instance("x") != testrun.instance("x")
    assert testrun.image_tag("broken") == f"sparkdock/spark:broken-sdt{testrun.RUN_ID}"
    assert not testrun.is_leftover(testrun.instance("x"))  # this run is alive
    assert testrun.is_leftover(_dead_run_instance())
    assert testrun.is_leftover("autotest")  # a fixed name of the runs before run ids
    assert not testrun.is_leftover("77e05e3f")  # a user's installation (hash of its data dir)


def test_processes_of_dead_runs_are_killed_and_ours_are_not() -> None:
    def marked(instance: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "SPARKDOCK_INSTANCE": instance, "SPARKDOCK_JOB": "j1"}
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)

    old, ours = marked(_dead_run_instance()), marked(testrun.instance("live"))
    try:
        deadline = time.monotonic() + 10
        while old.pid not in testrun.remove_leftover_processes():  # once its environment is readable
            assert time.monotonic() < deadline, "the dead run's process was never found"
            time.sleep(0.05)
        assert old.wait(timeout=10) == -9
        assert ours.poll() is None
    finally:
        for p in (old, ours):
            p.kill()
            p.wait()


@pytest.mark.docker
def test_containers_networks_and_images_of_dead_runs_are_removed(docker_image: str) -> None:  # noqa: F811
    import docker

    client = docker.from_env()
    old, ours = _dead_run_instance(), testrun.instance("live")
    old_tag = f"sparkdock/spark:broken-{old.split('-')[0]}"
    client.images.get(docker_image).tag(old_tag)
    made = {}
    for inst in (old, ours):
        labels = {"sparkdock.instance": inst}
        made[inst] = (client.networks.create(f"sparkdock-{inst}", labels=labels),
                      client.containers.create(docker_image, ["--help"], labels=labels, name=f"sparkdock-{inst}"))
    try:
        gone = testrun.remove_leftover_docker(client)
        assert f"container sparkdock-{old}" in gone and f"network sparkdock-{old}" in gone
        assert f"image {old_tag}" in gone
        assert not [g for g in gone if ours in g]
        names = {c.name for c in client.containers.list(all=True)}
        assert f"sparkdock-{ours}" in names and f"sparkdock-{old}" not in names
    finally:
        for net, cont in made.values():
            for thing in (cont, net):
                with contextlib.suppress(docker.errors.NotFound):
                    thing.remove(**({"force": True} if thing is cont else {}))
        client.close()
