"""``cluster/py_runner.py``: the application runs as if run directly, and its last output is not lost.

Real processes with real pipes: the runner is started as ``spark-submit`` starts a Python application, a child
whose stdout is a pipe read by someone else.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from job_helpers import until
from sparkdock.cluster import roles

RUNNER = roles.py_runner_path()


def _run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, RUNNER, str(app), *args], capture_output=True, text=True, timeout=60,
                          cwd=app.parent.parent)


def test_the_application_sees_what_a_script_sees(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "helper.py").write_text("VALUE = 'from the app folder'\n")
    app = tmp_path / "app" / "job.py"
    app.write_text(
        "import sys\n"
        "import helper\n"
        "print(__name__, __file__, sys.argv, helper.VALUE, sep='|')\n"
        "try:\n"
        "    import roles  # a module next to py_runner.py must not be importable by its bare name\n"
        "    print('runner folder on sys.path')\n"
        "except ImportError:\n"
        "    print('runner folder not on sys.path')\n")
    done = _run(app, "a", "b c")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"__main__|{app}|{[str(app), 'a', 'b c']}|from the app folder",
                                        "runner folder not on sys.path"]


@pytest.mark.parametrize(("code", "status", "stderr"), [
    ("sys.exit()", 0, ""), ("sys.exit(3)", 3, ""), ("sys.exit(-1)", 255, ""),
    ("sys.exit('bad input')", 1, "bad input"), ("pass", 0, ""),
])
def test_exit_status_as_the_interpreter_gives_it(tmp_path: Path, code: str, status: int, stderr: str) -> None:
    (tmp_path / "app").mkdir()
    app = tmp_path / "app" / "job.py"
    app.write_text(f"import sys\nprint('last words')\n{code}\n")
    done = _run(app)
    assert (done.returncode, done.stdout, done.stderr.strip()) == (status, "last words\n", stderr)


def test_an_uncaught_exception_is_printed_without_the_runner(tmp_path: Path) -> None:
    """The traceback is the one ``python job.py`` prints: sparkdock reads the kernel exit code from it."""
    (tmp_path / "app").mkdir()
    app = tmp_path / "app" / "job.py"
    app.write_text("def check(n):\n    if n != 101:\n        raise ValueError(f'expected 101 rows, found {n}')\n\n"
                   "try:\n    {}['missing']\nexcept KeyError as exc:\n    raise RuntimeError('wrapped') from exc\n")
    done = _run(app)
    direct = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, timeout=60)
    assert done.returncode == direct.returncode == 1
    assert done.stderr == direct.stderr
    assert "py_runner" not in done.stderr and "runpy" not in done.stderr
    assert "KeyError: 'missing'" in done.stderr and done.stderr.rstrip().endswith("RuntimeError: wrapped")


async def test_it_waits_until_the_last_output_is_read(tmp_path: Path) -> None:
    """A reader that has not read yet (the JVM's copying thread on a busy machine): the runner does not exit
    until it has, so the output the JVM copies before it exits is complete."""
    (tmp_path / "app").mkdir()
    marker = tmp_path / "ended"
    app = tmp_path / "app" / "job.py"
    app.write_text(f"import pathlib, sys\nprint('why it failed')\npathlib.Path({str(marker)!r}).touch()\n"
                   "sys.exit(4)\n")
    proc = subprocess.Popen([sys.executable, RUNNER, str(app)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        await until(marker.exists, "the application to end", 30)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)  # nobody has read the pipe: still waiting
        out, _ = proc.communicate(timeout=30)
        assert (proc.returncode, out) == (4, "why it failed\n")
    finally:
        proc.kill()
        proc.wait()


def test_without_arguments_it_says_how_to_use_it() -> None:
    done = subprocess.run([sys.executable, RUNNER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage: py_runner.py APP.py" in done.stderr
